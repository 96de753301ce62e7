"""Decode attention by kernel path (`kernels.decode_paths_s`, `step.decode_attention_s`, `Efficiency.dec_*`).

Hand-computed values of the form, the roofline floor under random and extreme parameters, 0 requests, and the
step model with the form switched on (`dec_paths` = 1) in both modes.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxsim as js
from jaxsim import smooth
from jaxsim.calibrate import fit as FT
from jaxsim.calibrate import tables as T
from jaxsim.cost import kernels as K
from jaxsim.step import decode_attention_s

PEAK, HBM = 989e12, 4.8e12  # H200 BF16 dense FLOP/s and HBM bytes/s (specs/hardware/h200-sxm.toml)
DEC = tuple(f for f in js.Efficiency.__dataclass_fields__ if f.startswith("dec_"))


def _hw(**eff: float) -> js.Hardware:
    hw = js.load_hardware("h200-sxm", calibrated=False)
    return FT.apply_params(hw, {"dec_paths": 1.0, "serving_latency_frac": 1.0, **eff})


def _gqa_model(heads: float, kv_heads: float, head_dim: float, window: float = 0.0, share: float = 0.0) -> js.Model:
    return js.Model(name="t", attention="gqa", n_layers=1.0, n_dense_layers=1.0, hidden=1024.0, vocab=1.0,
                    n_heads=heads, n_kv_heads=kv_heads, head_dim=head_dim, v_head_dim=head_dim,
                    sliding_window=window, sliding_layer_frac=share)


def _mla_model(heads: float) -> js.Model:
    return js.Model(name="t", attention="mla", n_layers=1.0, n_dense_layers=1.0, hidden=1024.0, vocab=1.0,
                    n_heads=heads, n_kv_heads=heads, head_dim=192.0, v_head_dim=128.0, kv_lora_rank=512.0,
                    qk_rope_dim=64.0, qk_nope_dim=128.0)


# ---- hand-computed ----


def test_gqa_form_hand_computed() -> None:
    hw = _hw(dec_latency_s=8e-6, dec_split_latency_s=4e-6, dec_split_half_context=768.0,
             dec_bf16_gqa_item_latency_s=30e-9, dec_item_head_dim_power=0.5, dec_query_item_latency_s=1e-9,
             dec_tile_item_latency_s=2e-9, dec_row_bytes_half=256.0, dec_bf16_memory_frac=0.8, dec_split_chunk=64.0,
             dec_ctas_half=20.0, dec_compute_frac=0.1, dec_overlap_p=2.0)
    # BF16 KV, 2 requests x 2 KV heads = 4 items, group 8 / 2 = 4, head_dim 128, 256 positions = 2 tiles.
    f_item = 4 * (30e-9 * 1.0 + 1e-9 * 4 * 1.0 + 2e-9 * 2)
    # Row 128 x 2 B = 256 B -> x 0.5; blocks 4 x (1 + 256 / 64) = 20 -> occupancy 20 / 40 = 0.5.
    kv = 2 * 2 * 2 * 256 * 128 * 2.0
    flops = 4 * 2 * 8 * 256 * 128.0
    mem, comp = kv / (HBM * 0.8 * 0.5 * 0.5), flops / (PEAK * 0.1)
    latency = 8e-6 + 4e-6 * 256 / (256 + 768)
    want = latency + math.sqrt(f_item**2 + mem**2 + comp**2)
    shape = K.DecodeShape(2.0, 256.0, 256.0, 8.0, 2.0, 128.0, 2.0, 1.0, False)
    assert float(K.decode_paths_s(hw, flops, kv, shape)) == pytest.approx(want, rel=1e-5)
    # The step model's composition gives the same from a model: FLOPs and bytes from `cost.flops`.
    t, op = decode_attention_s(_gqa_model(8.0, 2.0, 128.0), hw, js.Deployment(kv_bytes=2.0), 2.0, 256.0)
    assert (float(op.flops), float(op.bytes)) == (flops, kv)
    assert float(t) == pytest.approx(want, rel=1e-5)
    # TP 2: 4 query heads and 1 KV head per GPU; the latency share of a serving step scales only L.
    served = FT.apply_params(hw, {"serving_latency_frac": 0.25})
    t2, _ = decode_attention_s(_gqa_model(8.0, 2.0, 128.0), served, js.Deployment(tp=2.0, kv_bytes=2.0), 2.0, 256.0)
    shape2 = K.DecodeShape(2.0, 256.0, 256.0, 4.0, 1.0, 128.0, 2.0, 1.0, False)
    work2 = float(K.decode_paths_s(hw, flops / 2, kv / 2, shape2)) - latency
    assert float(t2) == pytest.approx(0.25 * latency + work2, rel=1e-5)


def test_gqa_paths_hand_computed() -> None:
    """Launch latency and per-item cost by path: MHA, BF16 GQA, FP8 GQA (head_dim >= 128: the FP8 launch), FP8 GQA
    above the group x head_dim threshold (slower items and bytes)."""
    hw = _hw(dec_latency_s=8e-6, dec_fp8_gqa_latency_s=5e-6, dec_split_latency_s=0.0, dec_mha_item_latency_s=10e-9,
             dec_bf16_gqa_item_latency_s=30e-9, dec_fp8_gqa_item_latency_s=6e-9, dec_item_head_dim_power=0.5,
             dec_query_item_latency_s=0.0, dec_tile_item_latency_s=0.0, dec_fp8_heavy_group_dim=2048.0,
             dec_fp8_heavy_slowdown=1.0, dec_overlap_p=1.0)
    # 1 request, 0 positions read: no bytes or FLOPs, the time is latency + the per-item cost.
    cases = [((8.0, 8.0, 128.0, 2.0), 8e-6 + 8 * 10e-9),  # MHA
             ((32.0, 8.0, 128.0, 2.0), 8e-6 + 8 * 30e-9),  # BF16 GQA
             ((32.0, 8.0, 128.0, 1.0), 5e-6 + 8 * 6e-9),  # FP8 GQA
             ((32.0, 8.0, 64.0, 1.0), 8e-6 + 8 * 6e-9 * math.sqrt(0.5)),  # FP8 GQA, head_dim 64: generic launch
             ((8.0, 8.0, 128.0, 1.0), 8e-6 + 8 * 10e-9)]  # FP8 MHA
    for (h, u, d, b), want in cases:
        shape = K.DecodeShape(1.0, 0.0, 0.0, h, u, d, b, 1.0, False)
        assert float(K.decode_paths_s(hw, 0.0, 0.0, shape)) == pytest.approx(want, rel=1e-5), (h, u, d, b)
    # Group 32 x head_dim 128 = 4096, far above 2048: slowdown 1 + sigmoid(10) ~ 2.
    heavy = float(K.decode_paths_s(hw, 0.0, 0.0, K.DecodeShape(1.0, 0.0, 0.0, 32.0, 1.0, 128.0, 1.0, 1.0, False)))
    assert heavy == pytest.approx(5e-6 + 6e-9 * (1.0 + 1.0 / (1.0 + math.exp(-10.0))), rel=1e-5)


def test_mla_form_hand_computed() -> None:
    hw = _hw(dec_mla_latency_s=10e-6, dec_mla_split_latency_s=5e-6, dec_mla_split_half_context=1024.0,
             dec_mla_item_latency_s=30e-9, dec_mla_head_item_latency_s=1e-9, dec_mla_fp8_memory_frac=0.6,
             dec_mla_split_chunk=256.0, dec_mla_max_splits=4.0, dec_mla_ctas_half=12.0, dec_mla_fp8_compute_frac=0.5,
             dec_mla_overlap_p=1.0, serving_latency_frac=0.4)
    # 4 requests, 16 heads, FP8 latent of 576 B per position, 1024 positions.
    f_item = 4 * (30e-9 + 1e-9 * 16)
    # x = 1024 / 256 = 4, splits 1 + 4 / (1 + 4 / 4) = 3, blocks 12, occupancy 12 / 24 = 0.5.
    kv = 576 * 4 * 1024 * 1.0
    flops = 2 * 4 * 1024 * 16 * (576 + 512.0)
    want = 0.4 * (10e-6 + 5e-6 * 0.5) + f_item + kv / (HBM * 0.6 * 0.5) + flops / (PEAK * 0.5)
    t, op = decode_attention_s(_mla_model(16.0), hw, js.Deployment(kv_bytes=1.0), 4.0, 1024.0)
    assert (float(op.flops), float(op.bytes)) == (flops, kv)
    assert float(t) == pytest.approx(want, rel=1e-5)
    # MTP: 1 + 1 query tokens per request double the per-head item cost and the FLOPs.
    t2, op2 = decode_attention_s(_mla_model(16.0), hw, js.Deployment(kv_bytes=1.0, nextn=1.0), 4.0, 1024.0)
    assert float(op2.flops) == 2 * flops
    assert float(t2) == pytest.approx(want + 4 * 1e-9 * 16 + flops / (PEAK * 0.5), rel=1e-5)


def test_sliding_window_layers_are_priced_apart() -> None:
    """Half the layers windowed at 128: the mean of the all-windowed and the all-full model, not the form at the
    mean positions read."""
    hw = _hw(dec_bf16_window_latency_s=20e-6, dec_window_tiles_half=8064.0)
    d = js.Deployment(kv_bytes=2.0)
    t = lambda share: float(decode_attention_s(_gqa_model(64.0, 8.0, 64.0, 128.0, share), hw, d, 16.0, 8192.0)[0])  # noqa: E731
    assert t(0.5) == pytest.approx(0.5 * (t(0.0) + t(1.0)), rel=1e-5)
    assert t(1.0) < t(0.0)
    # All layers windowed: the form at 128 positions, plus (BF16 KV) the tiles beyond the window:
    # 16 x 8 items x (8192 - 128) / 128 = 8064 item-tiles, at half of 20 µs.
    for kv, extra in ((2.0, 10e-6), (1.0, 0.0)):
        dk = js.Deployment(kv_bytes=kv)
        windowed = decode_attention_s(_gqa_model(64.0, 8.0, 64.0, 128.0, 1.0), hw, dk, 16.0, 8192.0)[0]
        short = decode_attention_s(_gqa_model(64.0, 8.0, 64.0), hw, dk, 16.0, 128.0)[0]
        assert float(windowed) == pytest.approx(float(short) + extra, rel=1e-5)
    # Switched off, the decode_attn_* form prices the layer mean as before.
    off = FT.apply_params(hw, {"dec_paths": 0.0})
    m = _gqa_model(64.0, 8.0, 64.0, 128.0, 0.5)
    op = js.cost.flops.decode_attention(m, d, 16.0, 8192.0)
    assert float(decode_attention_s(m, off, d, 16.0, 8192.0)[0]) == float(
        K.decode_attention_s(off, op.flops, op.bytes, 8192.0, d.attn_compute_bytes))


# ---- the roofline floor ----


def _rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    pick = lambda xs: rng.choice(xs, n)  # noqa: E731
    logu = lambda lo, hi: np.exp(rng.uniform(math.log(lo), math.log(hi), n)).round()  # noqa: E731
    df = pd.concat([pd.DataFrame({"op": op, "dtype": pick(["bf16", "fp8"]), "kv_dtype": pick(["bf16", "fp8"]),
                                  "batch": logu(1, 1024), "seq_len": 1.0, "prefix": logu(1, 131072) - 1,
                                  "heads": pick([1, 8, 16, 64, 128]), "kv_heads": pick([1, 2, 8]),
                                  "head_dim": pick([64, 128, 256]), "window": pick([0, 128])})
                    for op in ("generation_attention", "generation_mla")], ignore_index=True)
    df["latency_ms"] = 1.0
    return T.check_table(df, "random")


def test_roofline_of_decode_rows_is_the_pure_bound() -> None:
    hw = _hw()
    pred = FT.predict(hw, _rows(np.random.default_rng(1), 100))
    g = pred[pred.op == "generation_attention"]
    ctx = g.prefix + g.seq_len
    read = np.where(g.window > 0, np.minimum(ctx, g.window), ctx)
    kvb = g.kv_dtype.map({"bf16": 2.0, "fp8": 1.0})
    peak = g.dtype.map({"bf16": PEAK, "fp8": 1979e12})
    bound = np.maximum(4 * g.batch * g.heads * read * g.head_dim / peak,
                       2 * g.batch * g.kv_heads * read * g.head_dim * kvb / HBM)
    np.testing.assert_allclose(g.roofline_ms, bound * 1e3, rtol=1e-4)
    assert (pred.pred_ms >= pred.roofline_ms * (1 - 1e-6)).all()


def test_random_parameters_never_beat_the_roofline() -> None:
    """Parameters drawn far around the defaults in the fit's coordinates (x e^±6 for positive values)."""
    rng = np.random.default_rng(4)
    rows = _rows(rng, 150)
    base = _hw()
    coords = dict(FT.GROUPS["decode_attention"])
    for _ in range(4):
        free = {n: v + rng.normal(0.0, 3.0) for n, v in FT.to_unconstrained(base, ("decode_attention",)).items()}
        values = {n: float(v) for n, v in FT.from_unconstrained(free).items()}
        assert set(values) == set(coords)
        pred = FT.predict(FT.apply_params(base, values), rows)
        assert np.isfinite(pred.pred_ms).all()
        assert (pred.pred_ms >= pred.roofline_ms * (1 - 1e-6)).all()


# ---- 0 requests, gradients, the step model ----


@pytest.mark.parametrize("mode", [smooth.HARD, smooth.SMOOTH])
@pytest.mark.parametrize("attention", ["gqa", "mla"])
def test_no_requests_cost_nothing_with_finite_gradients(attention: str, mode: smooth.Mode) -> None:
    m = _mla_model(16.0) if attention == "mla" else _gqa_model(32.0, 8.0, 128.0, 128.0, 0.5)
    hw = _hw()

    def t(requests, context, eff):
        h = eqx.tree_at(lambda x: x.eff, hw, eff)
        return decode_attention_s(m, h, js.Deployment(kv_bytes=1.0, nextn=1.0), requests, context, 0.0, mode)[0]

    for context in (0.0, 4096.0):
        assert float(t(0.0, context, hw.eff)) == 0.0
        grads = jax.grad(t, argnums=(0, 1, 2))(0.0, context, hw.eff)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    # One request: positive, and every fitted parameter of its kind has a finite gradient.
    g_eff = jax.grad(t, argnums=2)(1.0, 4096.0, hw.eff)
    assert float(t(1.0, 4096.0, hw.eff)) > 0
    assert all(np.isfinite(float(getattr(g_eff, f))) for f in DEC)


# gpt-oss (windowed GQA) runs with -m slow: the windowed pricing is checked by default in
# test_sliding_window_layers_are_priced_apart, and the default run keeps inside its 10-minute budget.
@pytest.mark.parametrize("name", ["deepseek-v3", pytest.param("gpt-oss-120b", marks=pytest.mark.slow)])
def test_step_with_decode_paths_is_finite_and_differentiable(name: str) -> None:
    m = js.load_model(name)
    hw = _hw(serving_latency_frac=0.4)
    d = js.Deployment(tp=4.0, kv_bytes=1.0, nextn=1.0, nextn_accept=0.7)

    def total(x, hw):
        b = js.StepBatch(decode_requests=x[0], decode_context=x[1], decode_context_spread=0.5 * x[1])
        return js.step_cost(m, hw, d, b, smooth.SMOOTH).total_s

    value_and_grad = jax.jit(jax.value_and_grad(total))  # one compilation for every call below
    x = jnp.asarray([64.0, 3000.0])
    value, g = value_and_grad(x, hw)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(g)).all()
    assert float(g[0]) > 0 and float(g[1]) > 0  # more requests, longer contexts: slower
    for i, eps in ((0, 1.0), (1, 10.0)):
        step = jnp.zeros(2).at[i].set(eps)
        fd = (value_and_grad(x + step, hw)[0] - value_and_grad(x - step, hw)[0]) / (2 * eps)
        assert float(g[i]) == pytest.approx(float(fd), rel=0.05), i
    # The form is on: the step differs from the decode_attn_* form's.
    off = FT.apply_params(hw, {"dec_paths": 0.0})
    assert float(value_and_grad(x, off)[0]) != pytest.approx(float(value), rel=1e-3)
