"""The tiled GEMM model (`Efficiency.gemm_tiles` = 1, `kernels.tiled_gemm_s`): hand-computed tiles and waves, the
roofline floor under random and extreme parameters, zero rows, and the step model built on it."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsim as js
from jaxsim import smooth
from jaxsim.calibrate import fit as FT
from jaxsim.cost import kernels
from jaxsim.step import step_cost

BF16_PEAK, BW = 1e15, 4e12


def _hw(sm_count: float = 4.0, **eff: float) -> js.Hardware:
    """A round-number GPU with the tiled form on: compute at half the peak, HBM at full rate, terms added (p = 1)."""
    hw = js.load_hardware("h200-sxm", calibrated=False)
    hw = eqx.tree_at(lambda h: (h.bf16_flop_per_s, h.fp8_flop_per_s, h.fp4_flop_per_s, h.hbm_bytes_per_s, h.sm_count),
                     hw, (BF16_PEAK, 2 * BF16_PEAK, 4 * BF16_PEAK, BW, sm_count))
    base = dict(gemm_tiles=1.0, gemm_tile_compute_frac=0.5, gemm_fp8_tile_compute_frac=0.5, gemm_k_prologue=0.0,
                gemm_fp8_k_prologue=0.0, gemm_tile_memory_frac=1.0, gemm_fp8_tile_memory_frac=1.0,
                gemm_small_memory_frac=1.0, gemm_tile_work_p=1.0, gemm_quant_memory_frac=0.5,
                gemm_tile_latency_s=1e-6, gemm_fp8_tile_latency_s=2e-6, gemm_split_k_min=2048.0, gemm_wave_frac=1.0,
                gemm_fp8_misalign_amp=1.0, gemm_fp8_misalign_rows=200.0, serving_latency_frac=1.0)
    return eqx.tree_at(lambda h: h.eff, hw, js.Efficiency(**(base | eff)))


def _one(hw: js.Hardware, m: float, n: float, k: float, wb: float, bytes_: float, inner: float = 0.0) -> float:
    return float(kernels.gemm_s(hw, 2 * m * n * k, bytes_, m, wb, inner=inner, shapes=((n, k),)))


def test_tiles_and_waves_hand_computed() -> None:
    # BF16 100 × 300 × 1024 on 4 SMs: ⌈100/64⌉·⌈300/128⌉ = 2·3 = 6 tiles, no split (6 > 4 SMs), 1.5 → 2 whole waves
    # (q = 1): the GPU runs 2 · 4 tiles of 64 × 128 × 1024 at half the peak, × (1 + 256/1024) prologue.
    hw = _hw(gemm_k_prologue=256.0)
    compute = 2 * 4 * 2 * 64 * 128 * 1024 / (0.5 * BF16_PEAK) * 1.25
    assert _one(hw, 100, 300, 1024, 2.0, 1e6) == pytest.approx(compute + 1e6 / BW + 1e-6, rel=1e-5)
    # Balanced waves (q = 0): 1.5 waves.
    hw0 = _hw(gemm_k_prologue=256.0, gemm_wave_frac=0.0)
    assert _one(hw0, 100, 300, 1024, 2.0, 1e6) == pytest.approx(compute * 0.75 + 1e6 / BW + 1e-6, rel=1e-5)
    # Split-K: one 64 × 128 tile, K = 8192 split 4 ways (4 SMs, slices of 2048 ≥ gemm_split_k_min): one wave of
    # useful work, with the prologue paid per 2048-long slice.
    hw_k = _hw(gemm_k_prologue=512.0)
    compute = 2 * 64 * 128 * 8192 / (0.5 * BF16_PEAK) * (1 + 512 / 2048)
    assert _one(hw_k, 64, 128, 8192, 2.0, 1e6) == pytest.approx(compute + 1e6 / BW + 1e-6, rel=1e-5)
    # FP8 100 × 128 × 1024: one 128 × 128 tile, padded to the wave of 4 SMs (q = 1): 4 tiles' work; M = 100 is
    # misaligned: × (1 + (128 − 100)/128 · e^(−100/200)); the quantisation pass reads 2 B and writes 1 B per
    # element of 100 × 1024 at half the HBM rate; FP8 latency 2 µs.
    compute = 4 * 2 * 128 * 128 * 1024 / (0.5 * 2 * BF16_PEAK) * (1 + 28 / 128 * math.exp(-0.5))
    quant = 100 * 1024 * 3 / (0.5 * BW)
    got = _one(_hw(), 100, 128, 1024, 1.0, 1e6, inner=1024.0)
    assert got == pytest.approx(compute + 1e6 / BW + quant + 2e-6, rel=1e-5)
    # Size-dependent HBM fraction: 1 for large transfers, 0.5 for small, e-folding over 1 MB.
    hw_m = _hw(gemm_small_memory_frac=0.5, gemm_memory_size_bytes=1e6, gemm_tile_latency_s=0.0)
    mf = 1.0 - 0.5 * math.exp(-1.0)
    assert _one(hw_m, 1, 128, 64, 2.0, 1e6) == pytest.approx(4 * 2 * 64 * 128 * 64 / (0.5 * BF16_PEAK) + 1e6 / (BW * mf),
                                                             rel=1e-5)


def test_shapes_share_the_call_and_pay_one_latency_each() -> None:
    hw = _hw()
    shapes = ((384.0, 1024.0), (1024.0, 128.0))
    rows, flops, bytes_ = 256.0, 2 * 256.0 * (384 * 1024 + 1024 * 128), 3e6
    got = float(kernels.gemm_s(hw, flops, bytes_, rows, 2.0, shapes=shapes))
    traffic = [n * k * 2 + rows * (n + k) * 2 for n, k in shapes]
    want = sum(float(kernels.tiled_gemm_s(hw, 2 * rows * n * k, bytes_ * t / sum(traffic), rows, n, k, 2.0))
               for (n, k), t in zip(shapes, traffic, strict=True)) + 2 * 1e-6
    assert got == pytest.approx(want, rel=1e-6)
    # A GEMM of N = 0 (e.g. MLA's Q up-projection without a Q latent) costs nothing, latency included.
    assert float(kernels.gemm_s(hw, flops, bytes_, rows, 2.0, shapes=(*shapes, (0.0, 512.0)))) == pytest.approx(got)


def _random_eff(rng: np.random.Generator, lo: float, hi: float) -> dict[str, float]:
    out = {}
    for f in js.Efficiency.__dataclass_fields__:
        if f.startswith("gemm_") and f != "gemm_tiles":
            x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            out[f] = min(x, 1.0) if f.endswith("_frac") else 1.0 + x if f.endswith("_p") else x
    return out


@pytest.mark.parametrize("lo, hi", [(1e-3, 1e3), (1e-6, 1e-5), (1e5, 1e8)])
def test_never_below_the_roofline(lo: float, hi: float) -> None:
    rng = np.random.default_rng(int(lo * 1e6) % 97)
    n = 300
    m, nn, k = (np.exp(rng.uniform(0, math.log(65536), n)).round() for _ in range(3))
    wb = rng.choice([0.5, 1.0, 2.0], n)
    base = js.load_hardware("b200", calibrated=False)
    for _ in range(3):
        hw = eqx.tree_at(lambda h: h.eff, base, js.Efficiency(gemm_tiles=1.0, **_random_eff(rng, lo, hi)))
        flops = 2 * m * nn * k
        bytes_ = nn * k * wb + m * (nn + k) * 2
        t = jax.vmap(lambda f, b, r, w, n_, k_, h: kernels.gemm_s(h, f, b, r, w, inner=k_, shapes=((n_, k_),)),
                     in_axes=(0, 0, 0, 0, 0, 0, None))(*(jnp.asarray(x, jnp.float32)
                                                         for x in (flops, bytes_, m, wb, nn, k)), hw)
        peak = np.where(wb <= 0.5, float(hw.fp4_flop_per_s), np.where(wb <= 1.0, float(hw.fp8_flop_per_s),
                                                                    float(hw.bf16_flop_per_s)))
        bound = np.maximum(flops / peak, bytes_ / float(hw.hbm_bytes_per_s))
        assert np.all(np.isfinite(np.asarray(t)))
        assert np.all(np.asarray(t) >= bound * (1 - 1e-5))


@pytest.mark.parametrize("wb", [0.5, 1.0, 2.0])
def test_zero_rows_cost_nothing_with_finite_gradients(wb: float) -> None:
    hw = js.load_hardware("h200-sxm", calibrated=False)
    hw = FT.apply_params(hw, {"gemm_tiles": 1.0})

    def t(rows, eff):
        h = eqx.tree_at(lambda h: h.eff, hw, eff)
        return kernels.gemm_s(h, 2.0 * rows * 4096 * 7168, 4096 * 7168 * wb + rows * 11264 * 2, rows, wb,
                              inner=7168.0, shapes=((4096.0, 7168.0),))

    assert float(t(0.0, hw.eff)) == 0.0
    g_rows, g_eff = jax.grad(t, argnums=(0, 1))(0.0, hw.eff)
    assert np.isfinite(float(g_rows))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g_eff))
    # ... and a positive M is finite, differentiable and costs at least the latency.
    g_rows, g_eff = jax.grad(t, argnums=(0, 1))(37.0, hw.eff)
    assert np.isfinite(float(g_rows)) and all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g_eff))
    assert float(t(37.0, hw.eff)) > float(kernels.by_precision(wb, hw.eff.gemm_tile_latency_s,
                                                               hw.eff.gemm_fp8_tile_latency_s,
                                                               hw.eff.gemm_fp4_tile_latency_s))


@pytest.mark.parametrize("name", ["deepseek-v3", "qwen3-32b"])
def test_step_model_with_tiles_is_finite_and_differentiable(name: str) -> None:
    m = js.load_model(name)
    hw = FT.apply_params(js.load_hardware("h200-sxm"), {"gemm_tiles": 1.0})
    d = js.Deployment(tp=4, dp=2, ep=8, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)
    b = js.StepBatch(decode_requests=24.0, decode_context=3000.0, prefill_tokens=900.0, prefill_context=1500.0,
                     prefill_sequences=2.0)

    def total(requests, tokens, hw):
        bb = eqx.tree_at(lambda x: (x.decode_requests, x.prefill_tokens), b, (requests, tokens))
        return step_cost(m, hw, d, bb, smooth.SMOOTH).total_s

    hard = step_cost(m, hw, d, b).total_s
    off = step_cost(m, FT.apply_params(hw, {"gemm_tiles": 0.0}), d, b)
    assert np.isfinite(float(hard)) and float(hard) > 0
    assert float(step_cost(m, hw, d, b).flops) == float(off.flops)  # same FLOPs, whichever GEMM form
    value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(24.0, 900.0, hw)
    assert np.isfinite(float(value))
    assert float(grads[0]) > 0 and float(grads[1]) > 0  # more work never makes a step faster
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads[2]))
    # The decode-only step (no prefill rows) stays finite in value and gradient.
    value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(24.0, 0.0, hw)
    assert np.isfinite(float(value)) and np.isfinite(float(grads[1]))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads[2]))
