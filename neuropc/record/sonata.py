"""SONATA report views of a recording: :func:`to_sonata` writes small files that point into it
(virtual datasets and external links, no copy of the data)."""

from __future__ import annotations

import os

import h5py
import numpy as np

from .groups import attributes, row_index, unique_names

_SONATA_MAGIC = np.uint32(0x0A7A)


def to_sonata(path: str | os.PathLike, outdir: str | os.PathLike) -> list[str]:
    """SONATA report views of the per-sample recordings; returns the files written.

    One file ``<outdir>/<recording name, sanitized>.h5`` per recording, with the SONATA markers
    (``magic``, ``version``) and ``/report/<population>``: ``data`` is a virtual dataset over the
    recording's rows (no copy; it carries the ``units`` attribute SONATA readers need),
    ``mapping/{node_ids, index_pointers, element_ids, element_pos}`` are external links into the
    recording, ``mapping/time`` is ``[start, stop, dt]`` in steps with one frame per row (the
    frame of row r is ``r * every``; for settled and summary recordings a frame is a trial).
    Links use paths relative to ``outdir``: move the views and the recording together.
    """
    from .reader import open as _open

    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    written = []
    with _open(path) as rec:
        src = os.path.abspath(rec.file.filename)
        rel = os.path.relpath(src, os.path.abspath(outdir))
        names = unique_names(rec.names)
        for name in rec.names:
            g = rec.file["recordings"][name]
            ra = attributes(g)
            if ra["row_kind"] != "sample":
                continue
            _, _, n = row_index(g)
            if n == 0:  # nothing recorded (yet): no report
                continue
            ds = g["data"]
            every = float(ra.get("every", 1)) if ra["mode"] == "steps" else 1.0
            fn = os.path.join(outdir, names[name] + ".h5")
            with h5py.File(fn, "w") as v:
                v.attrs["magic"] = _SONATA_MAGIC
                v.attrs["version"] = np.array([0, 1], np.uint32)
                v.attrs["source"] = rel
                v.attrs["recording"] = name
                pop = v.create_group("report").create_group(str(ra["target"]))
                lay = h5py.VirtualLayout(shape=(n, ds.shape[1]), dtype=ds.dtype)
                lay[:] = h5py.VirtualSource(rel, ds.name, shape=ds.shape)[:n]
                d = pop.create_virtual_dataset("data", lay, fillvalue=np.nan)
                d.attrs["units"] = str(ra["units"])
                m = pop.create_group("mapping")
                for k in ("node_ids", "index_pointers", "element_ids", "element_pos"):
                    here = k if k in g["mapping"] else "index_pointer"  # older spelling
                    m[k] = h5py.ExternalLink(rel, f"{g.name}/mapping/{here}")
                t = m.create_dataset("time", data=np.array([0.0, n * every, every]))
                t.attrs["units"] = "step"
            written.append(fn)
    return written
