"""Connection kinds beyond dense (identity, embedding, attention, layernorm, conv, pooling).
Oracles: torch autograd of each operator's forward map (every vjp must be its derivative),
independent forward formulas (per-head loops, torch's layer_norm, window loops), the softmax's
exact underflow at the causal mask, and the initialisers' documented distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuropc.model import operators
from neuropc.model.operators import ShapeError, shape_str

if set(operators.OPERATORS) == {"dense"}:
    operators._register_builtin()

B = 3
# (kind, options, pre shapes, post shape): representative shapes and options of every kind
CASES = [
    ("dense", {}, [(6,)], (4,)),
    ("dense", {}, [(5, 6)], (5, 4)),
    ("dense", {"flatten": True}, [(2, 3, 2)], (5,)),
    ("identity", {}, [(3, 4)], (3, 4)),
    ("embedding", {"vocab": 7}, [(5,)], (5, 3)),
    ("attention_scores", {}, [(4, 6), (5, 6)], (4, 5)),
    ("attention_scores", {"heads": 2, "scale": 0.3}, [(4, 6), (5, 6)], (2, 4, 5)),
    ("attention_scores", {"heads": 2, "causal": True}, [(4, 6), (4, 6)], (2, 4, 4)),
    ("attention_scores", {"causal": True}, [(4, 6), (4, 6)], (1, 4, 4)),
    ("attention_values", {}, [(4, 5), (5, 6)], (4, 6)),
    ("attention_values", {}, [(1, 4, 5), (5, 6)], (4, 6)),
    ("attention_values", {"heads": 2}, [(2, 4, 5), (5, 6)], (4, 6)),
    ("layernorm", {}, [(6,)], (6,)),
    ("layernorm", {"eps": 1e-3}, [(3, 5)], (3, 5)),
    ("conv2d", {"kernel_size": 3}, [(2, 7, 7)], (4, 5, 5)),
    ("conv2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(2, 8, 7)], (3, 4, 4)),
    ("conv_transpose2d", {"kernel_size": 3}, [(2, 4, 4)], (3, 6, 6)),
    (
        "conv_transpose2d",
        {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        [(2, 4, 3)],
        (3, 8, 6),
    ),
    ("avg_pool2d", {"kernel_size": 2}, [(2, 6, 6)], (2, 3, 3)),
    ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(2, 7, 6)], (2, 4, 3)),
    ("max_pool2d", {"kernel_size": 2}, [(2, 6, 6)], (2, 3, 3)),
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(2, 7, 6)], (2, 4, 3)),
]


def _ids(case) -> str:
    kind, opts, pres, post = case
    o = ",".join(f"{k}={v}" for k, v in opts.items())
    return f"{kind}[{o}]{'+'.join(map(shape_str, pres))}->{shape_str(post)}"


def _inputs(op, pres, rng) -> list[torch.Tensor]:
    if op.name == "embedding":
        ids = rng.integers(0, op.options["vocab"], size=(B, *pres[0])).astype(float)
        return [torch.tensor(ids)]
    # continuous normals: max pooling sees no ties (almost surely)
    return [torch.tensor(rng.normal(size=(B, *p)), requires_grad=True) for p in pres]


def test_every_registered_kind_has_a_case() -> None:
    assert set(operators.OPERATORS) == {c[0] for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vjps_are_the_derivatives_of_forward(case) -> None:
    kind, opts, pres, post = case
    op = operators.make(kind, opts)
    op.check(pres, post)
    assert len(pres) == op.arity == len(op.differentiable)
    rng = np.random.default_rng(0)
    init = op.init(rng, pres, post, "normal", 1.3)
    assert {k: v.shape for k, v in init.items()} == op.param_shapes(pres, post)
    # perturbed, so that e.g. layernorm's gamma is not constant
    theta = {k: torch.tensor(v + rng.normal(size=v.shape), requires_grad=True)
             for k, v in init.items()}  # fmt: skip
    f = _inputs(op, pres, rng)
    out = op.forward(f, theta)
    assert tuple(out.shape) == (B, *post)
    assert out.dtype == torch.float64
    eps = torch.tensor(rng.normal(size=(B, *post)))
    (eps * out).sum().backward()
    fd = [x.detach() for x in f]
    vin = op.vjp_inputs(eps, fd, {k: v.detach() for k, v in theta.items()})
    assert len(vin) == op.arity
    for i, (g, x, diff) in enumerate(zip(vin, f, op.differentiable)):
        if not diff:
            assert g is None
            continue
        assert tuple(g.shape) == tuple(x.shape), i
        np.testing.assert_allclose(g, x.grad, rtol=0, atol=1e-10, err_msg=f"input {i}")
    vp = op.vjp_params(eps, fd, {k: v.detach() for k, v in theta.items()})
    assert set(vp) == set(theta)
    for k, g in vp.items():
        np.testing.assert_allclose(g, theta[k].grad, rtol=0, atol=1e-10, err_msg=k)


# ---- forward against independent formulas --------------------------------------------------
def test_attention_forward_matches_a_per_head_loop() -> None:
    rng = np.random.default_rng(1)
    h, t, d = 2, 4, 6
    q, k, v = (torch.tensor(rng.normal(size=(B, t, d))) for _ in range(3))
    sc = operators.make("attention_scores", {"heads": h, "causal": True})
    sc.check([(t, d), (t, d)], (h, t, t))
    s = sc.forward([q, k], {})
    p = torch.tensor(rng.random(size=(B, h, t, t)))
    out = operators.make("attention_values", {"heads": h}).forward([p, v], {})
    dh = d // h
    for b in range(B):
        for hh in range(h):
            cols = slice(hh * dh, (hh + 1) * dh)
            for i in range(t):
                for j in range(t):
                    want = (q[b, i, cols] @ k[b, j, cols]) / math.sqrt(dh) if j <= i else -1e4
                    assert float(s[b, hh, i, j]) == pytest.approx(float(want), abs=1e-12)
            want = p[b, hh] @ v[b, :, cols]
            np.testing.assert_allclose(out[b, :, cols], want, rtol=0, atol=1e-12)


def test_layernorm_matches_torch_layer_norm() -> None:
    rng = np.random.default_rng(2)
    op = operators.make("layernorm", {"eps": 1e-3})
    x = torch.tensor(rng.normal(size=(B, 3, 5)))
    g, sh = torch.tensor(rng.normal(size=5)), torch.tensor(rng.normal(size=5))
    want = torch.nn.functional.layer_norm(x, (5,), g, sh, eps=1e-3)
    np.testing.assert_allclose(op.forward([x], {"W": g, "shift": sh}), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["avg_pool2d", "max_pool2d"])
def test_pooling_matches_a_window_loop(kind: str) -> None:
    rng = np.random.default_rng(3)
    k, s, p = 3, 2, 1
    x = rng.normal(size=(1, 2, 7, 6))
    out = operators.make(kind, {"kernel_size": k, "stride": s, "padding": p}).forward(
        [torch.tensor(x)], {}
    )
    pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=np.nan)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            win = pad[0, :, i * s : i * s + k, j * s : j * s + k].reshape(2, -1)
            # avg counts padding as zeros (count_include_pad); max never picks padding
            want = np.nansum(win, 1) / k**2 if kind == "avg_pool2d" else np.nanmax(win, 1)
            np.testing.assert_allclose(out[0, :, i, j], want, rtol=0, atol=1e-12)


# ---- attention's probabilities ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_mask_gives_exactly_zero_probability(dtype) -> None:
    rng = np.random.default_rng(4)
    t, d = 6, 8
    q, k = (torch.tensor(3 * rng.normal(size=(B, t, d)), dtype=dtype) for _ in range(2))
    op = operators.make("attention_scores", {"heads": 2, "causal": True})
    op.check([(t, d), (t, d)], (2, t, t))
    s = op.forward([q, k], {})
    assert s.dtype == dtype
    p = torch.softmax(s, dim=-1)
    above = torch.ones(t, t, dtype=torch.bool).triu(1).expand_as(p)
    assert torch.all(p[above] == 0)
    assert torch.all(p[~above] > 0)
    np.testing.assert_allclose(p.sum(-1).double(), 1.0, rtol=0, atol=1e-6)
    logp = torch.log_softmax(s, dim=-1)  # finite, so p log p is 0 (not NaN) where masked
    assert torch.all(torch.isfinite(logp))
    assert torch.all((p * logp)[above] == 0)


def test_one_key_position_returns_the_values() -> None:
    rng = np.random.default_rng(5)
    t, d = 4, 6
    q, k, v = (torch.tensor(rng.normal(size=(B, n, d))) for n in (t, 1, 1))
    sc = operators.make("attention_scores")
    sc.check([(t, d), (1, d)], (t, 1))
    p = torch.softmax(sc.forward([q, k], {}), dim=-1)
    assert torch.all(p == 1)
    val = operators.make("attention_values")
    val.check([(t, 1), (1, d)], (t, d))
    out = val.forward([p, v], {})
    np.testing.assert_allclose(out, v.expand(B, t, d), rtol=0, atol=1e-15)


def test_heads1_score_layouts_hold_the_same_flat_numbers() -> None:
    rng = np.random.default_rng(3)
    q, k = (torch.tensor(rng.normal(size=(2, 4, 6))) for _ in range(2))
    flat = operators.make("attention_scores")
    flat.check([(4, 6), (4, 6)], (4, 4))
    unchecked = operators.make("attention_scores").forward([q, k], {})
    assert unchecked.shape == (2, 1, 4, 4)  # (1, T, S) unless check() saw a (T, S) post
    np.testing.assert_array_equal(flat.forward([q, k], {}).reshape(2, -1), unchecked.reshape(2, -1))


# ---- shape and option validation -------------------------------------------------------------
BAD_SHAPES = [
    ("identity", {}, [(3, 4)], (4, 3)),
    ("embedding", {"vocab": 5}, [(4,)], (5, 3)),
    ("embedding", {"vocab": 5}, [(4, 2)], (4, 3)),
    ("attention_scores", {}, [(4, 6), (5, 7)], (4, 5)),  # D mismatch
    ("attention_scores", {}, [(4, 6), (5, 6)], (5, 4)),  # wrong post
    ("attention_scores", {"heads": 2}, [(4, 6), (5, 6)], (4, 5)),  # post needs the head axis
    ("attention_scores", {"heads": 4}, [(4, 6), (5, 6)], (4, 4, 5)),  # 4 does not divide 6
    ("attention_scores", {}, [(6,), (6,)], (1, 1)),  # not sequences
    ("attention_scores", {"causal": True}, [(4, 6), (5, 6)], (4, 5)),  # causal needs T = S
    ("attention_values", {}, [(4, 5), (4, 6)], (4, 6)),  # S mismatch
    ("attention_values", {"heads": 2}, [(4, 5), (5, 6)], (4, 6)),  # P needs the head axis
    ("attention_values", {"heads": 4}, [(4, 4, 5), (5, 6)], (4, 6)),  # 4 does not divide 6
    ("attention_values", {}, [(4, 5), (5, 6)], (4, 7)),  # D mismatch with the post
    ("layernorm", {}, [(3, 5)], (5, 3)),
    ("conv2d", {"kernel_size": 3}, [(2, 7, 7)], (4, 6, 6)),
    ("conv2d", {"kernel_size": 3}, [(2, 7)], (4, 5)),
    ("conv2d", {"kernel_size": 9}, [(2, 7, 7)], (4, 1, 1)),  # kernel larger than the image
    ("conv_transpose2d", {"kernel_size": 3, "stride": 2}, [(2, 4, 4)], (3, 8, 8)),
    ("avg_pool2d", {"kernel_size": 2}, [(2, 6, 6)], (3, 3, 3)),  # channels are kept
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(2, 7, 6)], (2, 3, 3)),
]


@pytest.mark.parametrize("case", BAD_SHAPES, ids=_ids)
def test_mismatched_shapes_are_refused_naming_both(case) -> None:
    kind, opts, pres, post = case
    with pytest.raises(ShapeError) as e:
        operators.make(kind, opts).check(pres, post)
    msg = str(e.value)
    for s in [*pres, post]:
        assert shape_str(s) in msg, (s, msg)


def test_conv_and_pool_name_the_expected_post_shape() -> None:
    with pytest.raises(ShapeError, match=r"post shape \(3, 9, 9\)"):
        operators.make("conv_transpose2d", {"kernel_size": 3, "stride": 2}).check(
            [(2, 4, 4)], (3, 8, 8)
        )
    with pytest.raises(ShapeError, match=r"post shape \(2, 4, 3\)"):
        operators.make("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}).check(
            [(2, 7, 6)], (2, 3, 3)
        )


@pytest.mark.parametrize("pres", [[(6,), (6,)], [(2, 4, 6), (2, 4, 6)]])
def test_causal_attention_refuses_non_sequences(pres) -> None:
    with pytest.raises(
        ShapeError, match=r"causal mask needs sequence populations of shape \(T, d\)"
    ):
        operators.make("attention_scores", {"causal": True}).check(pres, (4, 4))


@pytest.mark.parametrize("kind", sorted({c[0] for c in CASES}))
def test_unknown_options_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=f"{kind}: unknown option\\(s\\) bogus"):
        operators.make(kind, {"bogus": 1})


BAD_OPTIONS = [
    ("conv2d", {}, "kernel_size", "None"),
    ("conv2d", {"kernel_size": 0}, "kernel_size", "0"),
    ("conv2d", {"kernel_size": 2.5}, "kernel_size", "2.5"),
    ("conv2d", {"kernel_size": True}, "kernel_size", "True"),
    ("conv2d", {"kernel_size": 3, "stride": 0}, "stride", "0"),
    ("conv2d", {"kernel_size": 3, "padding": -1}, "padding", "-1"),
    ("conv_transpose2d", {"kernel_size": "3"}, "kernel_size", "'3'"),
    (
        "conv_transpose2d",
        {"kernel_size": 3, "stride": 2, "output_padding": 2},
        "output_padding",
        "2",
    ),
    ("avg_pool2d", {}, "kernel_size", "None"),
    ("max_pool2d", {"kernel_size": -2}, "kernel_size", "-2"),
    ("max_pool2d", {"kernel_size": 2, "padding": 2}, "padding", "2"),
    ("avg_pool2d", {"kernel_size": 2, "stride": 0}, "stride", "0"),
    ("attention_scores", {"heads": 0}, "heads", "0"),
    ("attention_scores", {"causal": 1}, "causal", "1"),
    ("attention_scores", {"scale": -1.0}, "scale", "-1.0"),
    ("attention_values", {"heads": 1.5}, "heads", "1.5"),
    ("embedding", {}, "vocab", "None"),
    ("embedding", {"vocab": 0}, "vocab", "0"),
    ("layernorm", {"eps": 0.0}, "eps", "0.0"),
    ("layernorm", {"eps": "small"}, "eps", "'small'"),
]


@pytest.mark.parametrize(("kind", "opts", "name", "given"), BAD_OPTIONS)
def test_bad_option_values_are_refused_naming_option_and_value(kind, opts, name, given) -> None:
    with pytest.raises(ValueError) as e:
        operators.make(kind, opts)
    msg = str(e.value)
    assert not isinstance(e.value, ShapeError)
    assert msg.startswith(f"{kind}: option {name} ") and msg.endswith(f"got {given}"), msg


@pytest.mark.parametrize(
    ("bad", "why"), [(7.0, "out of range"), (-1.0, "out of range"), (2.5, "not an integer"),
                     (float("nan"), "not an integer")],
)  # fmt: skip
def test_embedding_refuses_bad_token_ids(bad: float, why: str) -> None:
    op = operators.make("embedding", {"vocab": 7})
    ids = np.array([[0.0, 3.0, 6.0], [1.0, 2.0, 5.0]])
    op.check_input(0, "tokens", ids)  # valid ids pass
    ids[1, 1] = bad
    ids[1, 2] = 100.0  # a later offender: the message names the first
    with pytest.raises(ValueError) as e:
        op.check_input(0, "tokens", ids)
    msg = str(e.value)
    assert "population 'tokens'" in msg and "[0, 7)" in msg, msg
    assert f"got {bad!r} ({why})" in msg, msg


# ---- initialisers ----------------------------------------------------------------------------
def test_conv2d_normal_init_has_the_fan_in_scale() -> None:
    rng = np.random.default_rng(6)
    c_in, c_out, k, g = 16, 64, 5, 1.5
    op = operators.make("conv2d", {"kernel_size": k})
    w = op.init(rng, [(c_in, 20, 20)], (c_out, 16, 16), "normal", g)["W"]
    assert w.shape == (c_out, c_in, k, k)
    assert w.std() == pytest.approx(g / math.sqrt(c_in * k * k), rel=0.02)  # 25.6k draws
    wt = operators.make("conv_transpose2d", {"kernel_size": k}).init(
        rng, [(c_in, 8, 8)], (c_out, 12, 12), "normal", g
    )["W"]
    assert wt.shape == (c_in, c_out, k, k)
    assert wt.std() == pytest.approx(g / math.sqrt(c_in * k * k), rel=0.02)


def test_embedding_and_layernorm_inits() -> None:
    rng = np.random.default_rng(7)
    w = operators.make("embedding", {"vocab": 500}).init(rng, [(4,)], (4, 64), "normal", 0.7)["W"]
    assert w.shape == (500, 64)
    assert w.std() == pytest.approx(0.7, rel=0.02)  # N(0, gain^2)
    ln = operators.make("layernorm").init(rng, [(3, 5)], (3, 5), "xavier_uniform", 0.7)
    assert np.all(ln["W"] == 0.7) and np.all(ln["shift"] == 0)
    with pytest.raises(ValueError, match="unknown init 'bogus'"):
        operators.make("layernorm").init(rng, [(5,)], (5,), "bogus", 1.0)
