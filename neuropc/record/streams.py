"""Chunked, appendable HDF5 datasets: how a recording's rows reach the file.

A :class:`Stream` is one dataset ``(rows, *shape)`` that grows one whole chunk at a time from a
chunk-sized buffer, so memory is bounded whatever the run length, uncompressed chunks go straight
to the file, and every flushed chunk survives a crash of the writer. It also undoes the rows of
one batch (:meth:`Stream.rollback`), which makes a batch's rows all or nothing
(:meth:`neuropc.record.recording.Recorder.consume`).
"""

from __future__ import annotations

import h5py
import numpy as np


class Stream:
    """An appendable dataset ``(rows, *shape)`` written one whole chunk at a time.

    Rows go to a chunk-sized buffer that holds the file rows ``start .. start + n`` (``start`` is
    a chunk boundary); a full buffer is written as one whole chunk. :meth:`finish` writes the
    buffered rows that are not on disk yet (a partial last chunk) and keeps them in the buffer:
    when the buffer fills, that chunk is written again, whole, so the dataset stays aligned on
    chunk boundaries and uncompressed chunks keep going straight to the file.

    :meth:`rollback` makes one batch's rows all-or-nothing: it truncates the dataset to its
    length before the batch and restores the buffered and the queued rows (see
    :meth:`~neuropc.record.recording.Recorder.consume`).
    """

    def __init__(self, group: h5py.Group, name: str, shape: tuple, dtype, chunk_bytes: int,
                 compression: str | None, rows: int | None = None) -> None:  # fmt: skip
        """``rows`` per chunk: from ``chunk_bytes`` unless given (row-aligned companions, e.g.
        a recording's trial ids, use its data's, so both flush together)."""
        dtype = np.dtype(dtype)
        row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        self.rows = rows or int(min(max(1, chunk_bytes // row_bytes), 1 << 16))
        kw = {}
        if compression:
            kw = dict(compression=compression, shuffle=True)
        self.ds = group.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
            chunks=(self.rows, *shape), **kw,
        )  # fmt: skip
        self.buf = np.zeros((self.rows, *shape), dtype)
        self.start = 0  # file row of buf[0], a multiple of self.rows
        self.n = 0  # rows in the buffer
        self.written = 0  # rows on disk (the dataset's length): start <= written <= start + n
        self.dirty = False  # written since the last flush
        self.pending: list = []
        self.direct = not compression  # raw chunks can bypass HDF5's chunk cache
        self.epoch = [0]  # the recorder's batch counter, shared by its streams
        self._drained: tuple[int, list] = (-1, [])  # (batch, the queue it first drained)

    def defer(self, block) -> None:
        """Queue small rows (ids, table columns) for :meth:`drain`: one write per flush instead
        of Python work per batch."""
        self.pending.append(block)

    def drain(self) -> None:
        if self.pending:
            if self._drained[0] != self.epoch[0]:  # the queue before the batch, for a rollback
                self._drained = (self.epoch[0], self.pending)
            rows = np.concatenate([np.atleast_1d(np.asarray(b)) for b in self.pending])
            self.pending = []
            self.append(rows)

    def append(self, block: np.ndarray) -> None:
        """Buffer ``block``'s rows; write every completed chunk (the buffered one, then the
        whole chunks straight from ``block``). :meth:`flush` makes them visible."""
        block = np.asarray(block)
        k, i = len(block), 0
        if self.n:
            m = min(self.rows - self.n, k)
            self.buf[self.n : self.n + m] = block[:m]
            self.n += m
            i = m
            if self.n == self.rows:
                self._write(self.start, self.buf)
                self.start += self.rows
                self.n = 0
        whole = ((k - i) // self.rows) * self.rows
        if whole:
            self._write(self.start, block[i : i + whole])
            self.start += whole
            i += whole
        if i < k:  # here the buffer is empty
            self.buf[: k - i] = block[i:]
            self.n = k - i

    def _write(self, w: int, rows: np.ndarray) -> None:
        """Write ``rows`` at file row ``w`` (growing the dataset as needed)."""
        n = len(rows)
        if w + n > self.ds.shape[0]:
            self.ds.resize(w + n, axis=0)
        if self.direct and n % self.rows == 0 and w % self.rows == 0:  # whole chunks, no cache
            rows = np.ascontiguousarray(rows, self.buf.dtype)
            zeros = (0,) * (rows.ndim - 1)
            for i in range(0, n, self.rows):
                self.ds.id.write_direct_chunk((w + i, *zeros), rows[i : i + self.rows])
        else:
            self.ds[w : w + n] = rows
        self.written = max(self.written, w + n)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.ds.flush()
            self.dirty = False

    def finish(self) -> None:
        """Write the queued and buffered rows not on disk yet (a partial last chunk, kept in the
        buffer and rewritten whole when it fills) and flush."""
        self.drain()
        if self.start + self.n > self.written:
            on_disk = self.written - self.start
            self._write(self.written, self.buf[on_disk : self.n])
        self.flush()

    # ---- one batch, all or nothing ------------------------------------------------------------
    def rollback(self, state: tuple[int, int, int, int]) -> None:
        """Drop every row added since ``state = (start, n, written, len(pending))``, taken in
        this batch before its first row: restore the queue and the buffer and truncate the
        dataset to its length then. Buffered rows that went to disk with a chunk since are read
        back from it."""
        start, n, written, queued = state
        ep, q = self._drained
        self.pending = (q if ep == self.epoch[0] else self.pending)[:queued]
        if self.start != start and n:  # the buffer was written out (whole) and reused
            self.buf[:n] = self.ds[start : start + n]
        self.start, self.n = start, n
        if self.ds.shape[0] != written:
            self.ds.resize(written, axis=0)
            self.dirty = True
        self.written = written
        self.flush()
