"""Networks of shaped populations and non-dense operators (issue 13, items 1, 2, 7 and 9) on the
torch backend, against the oracles used for flat networks (tests/test_oracle_gradients.py):
torch autograd of the energy written once (:mod:`neuropc.model.energy`), the backprop
reference, and closed forms.

* one inference step with rate 1 is ``x1 = x0 - dF/dx``; errors and energies are the energy's;
  ``Simulator.gradients`` is ``d mean_b F / d theta``;
* FPA on a transformer block with a categorical output equals backprop of the cross-entropy;
* a unit-variance Gaussian with ``energy="KL"`` on every node equals standard PC exactly;
* an attention node with one position reduces to a plain connection (the probabilities are 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import _cxx

import neuropc as npc
from neuropc.model.energy import errors, total_energy
from neuropc.reference import backprop

ATOL = 1e-10
B = 3


def conv_net() -> npc.Network:
    """image (1, 6, 6) -conv2d-> c1 (2, 4, 4) tanh -max_pool2d-> p1 (2, 2, 2) -dense(flatten)->
    label (3,) Categorical target, plus a decoder branch z (4,) -dense(flatten)-> d1 (2, 3, 3)
    -conv_transpose2d-> image prior... as a second, generative path into a Bernoulli output."""
    net = npc.Network()
    net.population("image", shape=(1, 6, 6), dims=("channel", "y", "x"), role="input")
    net.population("c1", shape=(2, 4, 4), activation="tanh")
    net.population("p1", shape=(2, 2, 2), activation="sigmoid")
    net.population("a1", shape=(2, 2, 2), activation="tanh")
    net.population("label", 3, role="target", distribution=npc.Categorical("KL"))
    net.population("z", 4, activation="tanh")
    net.population("d1", shape=(2, 3, 3), activation="tanh")
    net.population("recon", shape=(1, 6, 6), distribution=npc.Bernoulli("KL"))
    net.connect("image", "c1", kind="conv2d", kernel_size=3)
    net.connect("c1", "p1", kind="max_pool2d", kernel_size=2)
    net.connect("c1", "a1", kind="avg_pool2d", kernel_size=3, stride=2, padding=1)
    net.connect("p1", "label", flatten=True)
    net.connect("a1", "label", flatten=True)
    net.connect("z", "d1", flatten=True)
    net.connect("d1", "recon", kind="conv_transpose2d", kernel_size=2, stride=2)
    return net


def vae_net() -> npc.Network:
    """The PC-VAE's generative model: a Normal latent (mean and log-variance rows) under a
    learnable Gaussian prior, read whole by the decoder, a Bernoulli image."""
    net = npc.Network()
    net.population("z", shape=(2, 3), dims=("moment", "latent"), distribution=npc.Normal())
    net.population("h", 5, activation="tanh")
    net.population("image", 6, role="target", distribution=npc.Bernoulli())
    net.connect("z", "h", flatten=True)
    net.connect("h", "image")
    return net


NETWORKS = {
    "vae": vae_net,
    "transformer-kl": lambda: npc.transformer(vocab=7, seq=4, d=6, heads=2, ff=8),
    "transformer-gauss": lambda: npc.transformer(
        vocab=5, seq=3, d=4, ff=6, attention=npc.Gaussian(), output=npc.Gaussian()
    ),
    "transformer-1head": lambda: npc.transformer(vocab=6, seq=5, d=4, heads=1, ff=4),
    "conv": conv_net,
}


def random_params(sim: npc.Simulator, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights of the initialisers' scale, perturbed biases and layer-norm gains (so
    that nothing is at a special value)."""
    out = {}
    for k, v in sim.parameters().items():
        out[k] = v + rng.normal(0.0, 0.3, v.shape) if v.std() == 0 else v * rng.uniform(0.5, 1.5)
    return out


def data_for(net: npc.Network, rng: np.random.Generator, names) -> dict[str, np.ndarray]:
    """Data in each population's domain: token ids, one-hot rows, probabilities, normals."""
    out = {}
    for n in names:
        pop = net[n]
        if n == "tokens":
            vocab = dict(net.outgoing(n)[0].options)["vocab"]
            out[n] = rng.integers(0, vocab, (B, pop.size)).astype(float)
        elif isinstance(pop.distribution, npc.Categorical):
            k = pop.shape[-1]
            out[n] = np.eye(k)[rng.integers(0, k, (B, pop.size // k))].reshape(B, -1)
        elif isinstance(pop.distribution, npc.Bernoulli):
            out[n] = rng.random((B, pop.size))
        else:
            out[n] = rng.normal(0.0, 1.0, (B, pop.size))
    return out


@pytest.fixture(params=sorted(NETWORKS))
def case(request):
    net = NETWORKS[request.param]()
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=1)
    rng = np.random.default_rng(7)
    params = random_params(sim, rng)
    sim.load_parameters(params)
    cl = net.clamped("train")
    data = data_for(net, rng, sorted(cl))
    free = [n for n in net.populations if n not in cl]
    values = {n: rng.normal(0.0, 1.0, (B, net[n].size)) for n in free}
    return net, sim, params, data, values


def _leaves(arrays):
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in arrays.items()}


def test_value_step_is_energy_gradient(case) -> None:
    net, sim, params, data, values = case
    st = sim.infer(data, phase="train", values=values,
                   inference=npc.Inference(init="given", steps=1, rate=1.0))  # fmt: skip
    x = _leaves({**data, **values})
    total_energy(net, _leaves(params), x, net.clamped("train")).sum().backward()
    for n in values:
        want = x[n].grad.numpy() if x[n].grad is not None else np.zeros_like(values[n])
        np.testing.assert_allclose(values[n] - st[n], want, rtol=0, atol=ATOL, err_msg=n)


def test_errors_energies_and_weight_gradients(case) -> None:
    net, sim, params, data, values = case
    cfg = npc.Inference(init="given", steps=0)
    st, grads = sim.gradients(data, phase="train", values=values, inference=cfg)
    vals = _leaves({**data, **values})
    par = _leaves(params)
    cl = net.clamped("train")
    eps = errors(net, par, vals, cl)
    for n, e in eps.items():
        np.testing.assert_allclose(st[f"{n}:error"], e.numpy(), rtol=0, atol=ATOL, err_msg=n)
    total = total_energy(net, par, vals, cl).mean()
    assert st.energy[0] == pytest.approx(float(total.detach()), rel=1e-12)
    total.backward()
    assert set(grads) == set(params)
    for k, t in par.items():
        want = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        np.testing.assert_allclose(grads[k], want, rtol=0, atol=ATOL, err_msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_cuda_runs_every_kind_as_the_cpu(name: str) -> None:
    net = NETWORKS[name]()
    rng = np.random.default_rng(12)
    data = data_for(net, rng, sorted(net.clamped("train")))
    out = []
    for device in ("cpu", "cuda"):
        sim = npc.Simulator(net, backend="torch", device=device, dtype="float64", seed=4)
        out.append(sim.gradients(data, inference=npc.Inference(steps=10, rate=0.05))[1])
    for k in out[0]:
        np.testing.assert_allclose(out[1][k], out[0][k], rtol=0, atol=1e-10, err_msg=k)


def test_inference_descends_the_energy(case) -> None:
    _, sim, _, data, _ = case
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=50, rate=0.05))
    e = st.energy
    assert np.all(np.diff(e) <= 1e-12) and e[-1] < e[0]


def test_fpa_on_a_transformer_block_equals_backprop_of_the_cross_entropy() -> None:
    # Gaussian hidden nodes (attention too, unit variance), categorical output: the error wave
    # of FPA with rate 1 reaches the embedding after the longest path and is then backprop
    net = npc.transformer(vocab=7, seq=4, d=6, heads=2, ff=8, attention=npc.Gaussian())
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    params = random_params(sim, rng)
    sim.load_parameters(params)
    data = data_for(net, rng, ["tokens", "next"])
    want = backprop.gradients(net, params, data)
    _, got = sim.gradients(data, inference=npc.Inference(mode="fpa", steps=12, rate=1.0))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=ATOL, err_msg=k)
    loss = float(backprop.loss(net, {k: torch.tensor(v) for k, v in params.items()},
                               {k: torch.tensor(v) for k, v in data.items()}))  # fmt: skip
    logits = backprop.feedforward(net, {k: torch.tensor(v) for k, v in params.items()},
                                  {"tokens": torch.tensor(data["tokens"])})["next"]  # fmt: skip
    ce = -(torch.tensor(data["next"]).reshape(B, 4, 7) * torch.log_softmax(
        logits.reshape(B, 4, 7), -1)).sum((1, 2)).mean()  # fmt: skip
    assert loss == pytest.approx(float(ce), rel=1e-13)  # the loss is the cross-entropy


def test_unit_gaussian_kl_everywhere_is_standard_pc() -> None:
    kw = dict(vocab=5, seq=3, d=4, ff=6)
    f = npc.transformer(**kw, attention=npc.Gaussian(), output=npc.Gaussian())
    kl = npc.transformer(
        **kw, attention=npc.Gaussian(energy="KL"), output=npc.Gaussian(energy="KL")
    )
    for n in kl.populations:
        if kl.has_error(n):
            kl.update(n, distribution=npc.Gaussian(energy="KL"))
    rng = np.random.default_rng(4)
    sims = [npc.Simulator(n, backend="torch", dtype="float64", seed=5) for n in (f, kl)]
    params = random_params(sims[0], rng)
    data = data_for(f, rng, ["tokens", "next"])
    out = []
    for s in sims:
        s.load_parameters(params)
        s.learn(data, inference=npc.Inference(steps=10, rate=0.1), optimizer=npc.Adam(1e-3))
        out.append(s.parameters())
    for k in out[0]:
        np.testing.assert_array_equal(out[0][k], out[1][k], err_msg=k)


def test_attention_with_one_position_is_a_plain_connection() -> None:
    """With one key position every softmax row is [1]: ``mix = v`` whatever q and k are, so the
    attention path behaves as an identity connection v -> mix (and sends no error to q, k)."""
    att = npc.transformer(vocab=5, seq=1, d=4, ff=6)
    plain = npc.transformer(vocab=5, seq=1, d=4, ff=6)
    plain.connections = [c for c in plain.connections if c.post not in ("attn", "mix")]
    plain.connect("v", "mix", kind="identity")
    rng = np.random.default_rng(6)
    sa = npc.Simulator(att, backend="torch", dtype="float64", seed=0)
    params = random_params(sa, rng)
    sa.load_parameters(params)
    sp = npc.Simulator(plain, backend="torch", dtype="float64", seed=0)
    sp.load_parameters(params)
    data = data_for(att, rng, ["tokens", "next"])
    cfg = npc.Inference(steps=20, rate=0.1)
    (st_a, ga), (st_p, gp) = sa.gradients(data, inference=cfg), sp.gradients(data, inference=cfg)
    for n in ("embed", "v", "mix", "resid", "hidden", "next"):
        np.testing.assert_allclose(st_a[n], st_p[n], rtol=0, atol=1e-12, err_msg=n)
    for k in gp:
        np.testing.assert_allclose(ga[k], gp[k], rtol=0, atol=1e-12, err_msg=k)
    np.testing.assert_array_equal(st_a["attn:error"], 0.0)  # p = q = [1]: nothing flows back
    np.testing.assert_array_equal(st_a.energies["attn"], 0.0)


# ---- recordings, checkpoints and the description carry the shapes ------------------------------
def test_shaped_recordings_read_back_with_labelled_dimensions(tmp_path) -> None:
    net = NETWORKS["transformer-kl"]()
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=1,
                        inference=npc.Inference(steps=4, rate=0.1))  # fmt: skip
    rng = np.random.default_rng(8)
    data = data_for(net, rng, ["tokens", "next"])
    probes = [npc.Probe("attn", "value", dtype="float64"), npc.Probe("mix", "error", dtype="float64"),
              npc.Probe("mix", "value", units=[0, 5], dtype="float64", name="sub")]  # fmt: skip
    with sim.record(tmp_path / "r.h5", probes):
        st = sim.learn(data)
    r = npc.open(tmp_path / "r.h5")
    a = r["attn:value"]
    assert a.dims == ("trial", "step", "head", "query", "key")
    assert a.shape == (B, 5, 2, 4, 4)
    np.testing.assert_array_equal(a.coords["key"], np.arange(4))
    # the last recorded step is the state the run ended in, reshaped in C order
    np.testing.assert_array_equal(a.values[:, -1], st["attn"].reshape(B, 2, 4, 4))
    np.testing.assert_array_equal(a.isel(head=1, query=[3, 0]).values,
                                  a.values[:, :, 1][:, :, [3, 0]])  # fmt: skip
    np.testing.assert_array_equal(a.sel(query=2, key=1).values, a.values[:, :, :, 2, 1])
    e = r["mix:error"]
    assert e.dims == ("trial", "step", "token", "feature")
    np.testing.assert_array_equal(e.values[:, -1], st["mix:error"].reshape(B, 4, 6))
    assert r["sub"].dims == ("trial", "step", "unit")  # a subset of units stays flat
    r.close()
    pynwb = pytest.importorskip("pynwb")
    from neuropc.record import export

    out = export.to_nwb(tmp_path / "r.h5", tmp_path / "r.nwb")
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        pops = io.read().processing["misc"]["model_populations"].to_dataframe()
        row = pops[pops.population == "attn"].iloc[0]
        assert (row["size"], row["shape"], row["dims"]) == (32, "[2, 4, 4]",
                                                             '["head", "query", "key"]')  # fmt: skip


def test_shapes_survive_the_description_and_checkpoints(tmp_path) -> None:
    for make in NETWORKS.values():
        net = make()
        assert npc.Network.from_spec(net.spec()).spec() == net.spec()
    net = NETWORKS["transformer-kl"]()
    sim = npc.Simulator(net, backend="torch", seed=3, optimizer=npc.Adam(1e-3))
    rng = np.random.default_rng(9)
    data = data_for(net, rng, ["tokens", "next"])
    sim.learn(data)
    sim.save(tmp_path / "c.h5")
    back = npc.load(tmp_path / "c.h5")
    assert back.network.spec() == net.spec()
    assert back.network["attn"].shape == (2, 4, 4) and back.network["attn"].dims[0] == "head"
    for k, v in sim.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v, err_msg=k)
    a, b = sim.learn(data), back.learn(data)
    np.testing.assert_array_equal(a.energy, b.energy)  # resumes bit for bit


def test_shaped_data_may_be_given_in_the_population_shape() -> None:
    net = NETWORKS["conv"]()
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=0)
    rng = np.random.default_rng(10)
    img = rng.normal(size=(B, 1, 6, 6))
    label = np.eye(3)[[0, 1, 2]]
    a = sim.infer({"image": img, "label": label}, phase="train")
    b = sim.infer({"image": img.reshape(B, -1), "label": label}, phase="train")
    np.testing.assert_array_equal(a.energy, b.energy)


# ---- bad input: each error names what is wrong ------------------------------------------------
def test_bad_shapes_and_kinds_are_refused_with_clear_errors() -> None:
    net = npc.Network()
    net.population("q", shape=(4, 6))
    net.population("k", shape=(5, 8))
    net.population("a", shape=(4, 5))
    with pytest.raises(ValueError, match=r"connection q,k->a: attention_scores: q and k differ in "
                                         r"width D; got pre shapes q shape \(4, 6\), k shape "
                                         r"\(5, 8\); post shape \(4, 5\)"):  # fmt: skip
        net.connect(("q", "k"), "a", kind="attention_scores")
    net.population("h", shape=(3, 3))
    with pytest.raises(ValueError, match=r"connection a->h: dense maps the last axis and keeps "
                                         r"the others: pre shape \(4, 5\) and post shape \(3, 3\)"):  # fmt: skip
        net.connect("a", "h")
    net.population("f1", 6)
    net.population("f2", 6)
    net.population("s", shape=(2, 2))
    with pytest.raises(ValueError, match=r"causal mask needs sequence populations of shape "
                                         r"\(T, d\).*q shape \(6,\)"):  # fmt: skip
        net.connect(("f1", "f2"), "s", kind="attention_scores", causal=True)
    with pytest.raises(ValueError, match="kind 'attention_scores' takes 2 presynaptic"):
        net.connect("q", "a", kind="attention_scores")
    with pytest.raises(ValueError, match="unknown option.*heds"):
        net.connect(("q", "a"), "s", kind="attention_scores", heds=2)
    assert net.connections == []  # nothing half-added


def test_token_ids_out_of_range_are_refused_naming_the_population() -> None:
    net = NETWORKS["transformer-kl"]()
    sim = npc.Simulator(net, backend="torch", seed=0)
    rng = np.random.default_rng(11)
    data = data_for(net, rng, ["tokens", "next"])
    before = sim.parameters()
    bad = dict(data, tokens=np.where(data["tokens"] == data["tokens"].max(), 7.0, data["tokens"]))
    with pytest.raises(ValueError, match=r"'tokens'.*\[0, 7\).*7"):
        sim.learn(bad)
    with pytest.raises(ValueError, match="'tokens'"):
        sim.learn(dict(data, tokens=data["tokens"] + 0.5))
    for k, v in sim.parameters().items():
        np.testing.assert_array_equal(v, before[k])  # nothing learned


def test_numba_refuses_shaped_populations_and_other_kinds() -> None:
    net = npc.Network()
    net.population("x", shape=(4, 6), role="input")
    net.population("y", shape=(4, 3))
    net.connect("x", "y")  # dense per token: a shaped population
    with pytest.raises(ValueError, match=r"population 'x' has shape \(4, 6\), which the numba "
                                         r"backend does not run .*backends that do: torch"):  # fmt: skip
        npc.Simulator(net, backend="numba")
    net = npc.Network()
    net.population("a", 4, role="input")
    net.population("b", 4)
    net.connect("a", "b", kind="identity")
    with pytest.raises(ValueError, match="connection 'a->b' is of kind 'identity', which the "
                                         "numba backend does not run; backends that do: torch"):  # fmt: skip
        npc.Simulator(net, backend="numba")
    with pytest.raises(ValueError, match="token ids"):  # a free embedding input: no gradient
        n2 = npc.transformer(vocab=5, seq=3, d=4, ff=4)
        n2.update("tokens", role="hidden")
        npc.Simulator(n2, backend="torch").infer({"next": np.tile(np.eye(5)[0], (1, 3))},
                                                 phase="train")  # fmt: skip


def test_categorical_over_a_named_axis_is_one_distribution_per_column() -> None:
    """A (3, 4) target with ``Categorical(axis="row")``: each of the 4 columns is a distribution
    over the 3 rows; its energy is the cross-entropy summed over columns (closed form, numpy)."""
    net = npc.Network()
    net.population("x", 5, role="input")
    net.population("y", shape=(3, 4), dims=("row", "col"), role="target",
                   distribution=npc.Categorical(axis="row"))  # fmt: skip
    net.connect("x", "y", flatten=True)
    assert net["y"].axis == 0
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=0)
    rng = np.random.default_rng(13)
    x = rng.normal(size=(B, 5))
    y = np.zeros((B, 3, 4))
    for b in range(B):
        y[b, rng.integers(0, 3, 4), np.arange(4)] = 1.0  # one-hot down each column
    st = sim.infer({"x": x, "y": y.reshape(B, -1)}, phase="train",
                   inference=npc.Inference(steps=0))  # fmt: skip
    p = sim.parameters()
    mu = (x @ p["x->y"].T + p["y:bias"]).reshape(B, 3, 4)
    logq = mu - np.log(np.exp(mu).sum(axis=1, keepdims=True))
    want = float(np.mean(-(y * logq).sum(axis=(1, 2))))
    assert st.energy[0] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="each row of data must be on the simplex"):
        sim.infer(
            {"x": x, "y": np.full((B, 12), 0.25)}, phase="train"
        )  # rows sum to 1, columns not
    with pytest.raises(
        ValueError, match=r"Categorical\(axis='lane'\) names no axis; dims: row, col"
    ):
        net.population(
            "z", shape=(2, 2), dims=("row", "col"), distribution=npc.Categorical(axis="lane")
        )


def test_natural_gradient_refuses_shaped_populations() -> None:
    net = npc.Network()
    net.population("x", shape=(4, 6), role="input")
    net.population("y", shape=(4, 3), role="target")
    net.connect("x", "y")
    with pytest.raises(ValueError, match="NaturalGradient: connection 'x->y' joins shaped"):
        npc.Simulator(net, backend="torch", optimizer=npc.NaturalGradient())
    from neuropc.reference.natural_gradient import KFAC

    with pytest.raises(ValueError, match="KFAC: connection 'x->y' joins shaped populations"):
        KFAC(net, npc.NaturalGradient())


@pytest.mark.skipif(not _cxx(), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("name", ["conv", "transformer-kl"])
def test_compiled_shaped_networks_run_the_eager_steps(name: str) -> None:
    """The compiled torch backend (one chunk per run: the initialisation and the steps of every
    operator in one graph) against the eager one, float64: the same values, errors and energies
    of each batch and the same parameters after two Adam steps (conv, pooling and transposed
    conv; embedding, attention, layer norm, identity)."""
    net = NETWORKS[name]()
    rng = np.random.default_rng(3)
    sims = [
        npc.Simulator(net, backend="torch", dtype="float64", seed=1, compile=c,
                      inference=npc.Inference(steps=6, rate=0.1), optimizer=npc.Adam(0.01))
        for c in (False, True)
    ]  # fmt: skip
    params = random_params(sims[0], rng)
    for s in sims:
        s.load_parameters(params)
    for _ in range(2):
        data = data_for(net, rng, sorted(net.clamped("train")))
        eager, comp = (s.learn(data) for s in sims)
        for part in ("values", "errors", "energies"):
            for n, v in getattr(eager, part).items():
                np.testing.assert_allclose(getattr(comp, part)[n], v, rtol=0, atol=ATOL)
    for k, v in sims[0].parameters().items():
        np.testing.assert_allclose(sims[1].parameters()[k], v, rtol=0, atol=ATOL, err_msg=k)
