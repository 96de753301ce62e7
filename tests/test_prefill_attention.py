"""Prefill attention as a tile model (`kernels.prefill_attention_s`, `ctx_tiles` = 1): hand-computed values, the
roofline floor, zero work, gradients, the step model with it, the sliding-window FLOP count and the spec fields."""

from __future__ import annotations

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsim as js
from jaxsim import smooth
from jaxsim.calibrate import fit as FT
from jaxsim.cost import flops as F
from jaxsim.cost import kernels as K
from jaxsim.presets import SpecError
from jaxsim.step import prefill_core_attention_s
from tests.conftest import x64

BF16, FP8 = 989e12, 1979e12  # H200 dense peaks, FLOP/s
BW = 4.8e12  # H200 HBM, B/s


def _hw(**eff) -> js.Hardware:
    """The H200 hardware file with `ctx_tiles` on and the given `Efficiency` fields (others at their defaults)."""
    hw = js.load_hardware("h200-sxm", calibrated=False)
    return eqx.tree_at(lambda h: h.eff, hw, js.Efficiency(ctx_tiles=1.0, **eff))


# Parameters that make the arithmetic short: no softmax or step cost, p = 1 (sums), full HBM rate.
SIMPLE = dict(ctx_compute_frac=0.5, ctx_softmax_s=0.0, ctx_kv_step_s=0.0, ctx_cta_latency_s=0.0, ctx_diag_tiles=0.0,
              ctx_tail_frac=0.0, ctx_sched_p=1.0, ctx_memory_frac=1.0, ctx_pre_memory_frac=1.0, ctx_latency_s=0.0,
              ctx_window_extra=0.0)


def _gqa(hw, seqs, new, prefix, heads, kv_heads, d, window, cb=2.0, kvb=2.0, mode=smooth.HARD):
    return float(K.prefill_attention_s(hw, seqs, new, prefix, heads, kv_heads, d, d, window, cb, kvb, False, mode))


# ---- hand-computed values ----


def test_two_query_tiles_hand_computed() -> None:
    hw = _hw(ctx_compute_frac=0.5, ctx_softmax_s=0.0, ctx_overlap_p=3.0, ctx_kv_step_s=1e-8, ctx_cta_latency_s=2e-6,
             ctx_diag_tiles=0.5, ctx_tail_frac=0.5, ctx_sched_p=1.0, ctx_memory_frac=1.0, ctx_pre_memory_frac=0.5,
             ctx_latency_s=5e-6)
    # One sequence of 256 tokens, one head of dim 128, BF16: 2 query tiles visit 1 + 2 = 3 KV tiles; the longest
    # CTA visits 2. D = 128 + 128 = 256; one tile is 128 × 128 × 2 × 256 FLOP at half the BF16 peak, on 1/132 of it.
    mma = 128 * 128 * 2 * 256 / (BF16 * 0.5) * 132
    tile = mma + 1e-8 * 256 / 256  # no softmax: the p-norm is the MMA time; + the KV-step cost
    cta = 2e-6 + 0.5 * tile  # fixed cost + half a tile for the masked diagonal
    per_head = 3 * tile + 2 * cta
    balanced = per_head / 132 + 0.5 * per_head / 2  # one (sequence, head) over 132 SMs + half a mean CTA
    critical = 2 * tile + cta
    attn = balanced + critical  # sched_p = 1
    # Compulsory bytes 256 × (128 × 2 Q + 128 × 2 O + 256 × 2 K/V) = 262 kB: far below the compute time.
    assert 256 * (128 * 2 + 128 * 2 + 256 * 2) / BW < attn
    pre = 256 * (128 * 2 * 2 + 256 * (2 + 2)) / (BW * 0.5)  # Q read + written, K/V read + cached in BF16
    want = attn + pre + 5e-6
    assert _gqa(hw, 1.0, 256.0, 0.0, 1.0, 1.0, 128.0, 0.0) == pytest.approx(want, rel=1e-5)
    # In serving the per-call latency is paid at `serving_latency_frac`.
    served = eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, 0.4)
    assert _gqa(served, 1.0, 256.0, 0.0, 1.0, 1.0, 128.0, 0.0) == pytest.approx(want - 3e-6, rel=1e-5)


@pytest.mark.parametrize(("new", "prefix", "window", "tiles", "longest"), [
    (1024.0, 0.0, 0.0, 36.0, 8.0),  # 8 query tiles: the triangle 1 + … + 8
    (1024.0, 0.0, 128.0, 15.0, 2.0),  # band of 128/128 + 1 = 2 tiles: 1 + 2 + 6 × 2
    (256.0, 300.0, 0.0, 9.0, 5.0),  # prefix of ⌈300/128⌉ = 3 tiles: (3 + 1) + (3 + 2)
    (100.0, 300.0, 0.0, 3.875, 3.875),  # one query tile: 3 prefix tiles + keys rounded to 112 of 128
    (40.0, 0.0, 0.0, 0.375, 0.375),  # 48 of 128 keys
])
def test_tile_counts_hand_computed(new: float, prefix: float, window: float, tiles: float, longest: float) -> None:
    hw = _hw(**SIMPLE)
    mma = 128 * 128 * 2 * 256 / (BF16 * 0.5) * 132
    # 132 (sequence, head) pairs fill the SMs once: balanced = tiles × tile time; p = 1 adds the longest CTA.
    pre = 132 * new * (128 * 4 + 256 * 4) / BW
    got = _gqa(hw, 132.0, new, prefix, 1.0, 1.0, 128.0, window)
    assert got - pre == pytest.approx((tiles + longest) * mma, rel=1e-5)


def test_mla_uses_native_dims_and_its_own_parameters() -> None:
    hw = _hw(**SIMPLE, ctx_mla_compute_frac=0.8, ctx_mla_kv8_compute_frac=0.4, ctx_mla_cta_latency_s=0.0,
             ctx_mla_kv8_cta_latency_s=0.0, ctx_mla_latency_s=7e-6)
    # DeepSeek-style expanded MLA: d_qk 192, d_v 128 (D = 320, no padding), one K/V per head; 132 heads, s = 2048:
    # 16 query tiles visit 136 KV tiles, the longest 16 (compute-bound: 1.6 µs against 0.6 µs of compulsory bytes).
    def mla(kvb: float) -> float:
        return float(K.prefill_attention_s(hw, 1.0, 2048.0, 0.0, 132.0, 132.0, 192.0, 128.0, 0.0, 2.0, kvb, True))

    pre = lambda kvb: 2048 * (132 * 192 * 4 + 132 * 320 * (2 + kvb)) / BW  # noqa: E731
    for kvb, frac in ((2.0, 0.8), (1.0, 0.4)):
        mma = 128 * 128 * 2 * 320 / (BF16 * frac) * 132
        assert mla(kvb) - pre(kvb) - 7e-6 == pytest.approx((136 + 16) * mma, rel=1e-5)


def test_fp8_math_uses_the_fp8_peak_and_fraction() -> None:
    hw = _hw(**SIMPLE, ctx_fp8_compute_frac=0.25)
    mma = 128 * 128 * 2 * 256 / (FP8 * 0.25) * 132
    pre = 132 * 128 * (128 * 4 + 256 * 3) / BW
    assert _gqa(hw, 132.0, 128.0, 0.0, 1.0, 1.0, 128.0, 0.0, cb=1.0, kvb=1.0) - pre == pytest.approx(2 * mma, rel=1e-5)


# ---- the roofline floor ----


def _random_efficiency(rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for name, coord in dict(FT.GROUPS["attention"]).items():
        if not name.startswith("ctx_"):
            continue
        default = float(getattr(js.Efficiency(), name))
        if coord == "logit":
            out[name] = float(rng.uniform(1e-3, 1.0))
        elif coord == "log1":
            out[name] = float(1.0 + np.exp(rng.uniform(-5, 4)))
        else:
            out[name] = float(default * np.exp(rng.uniform(-6, 3)))
    return out


def _causal_scores(new: int, prefix: int, window: int) -> int:
    """Σ_{i=1..new} min(prefix + i, window) by direct summation (window 0: no limit)."""
    pos = prefix + np.arange(1, new + 1, dtype=np.int64)
    return int(np.minimum(pos, window).sum() if window > 0 else pos.sum())


@pytest.mark.parametrize("mode", [smooth.HARD, smooth.SMOOTH], ids=["hard", "smooth"])
def test_never_below_the_roofline_random_parameters_and_shapes(mode: smooth.Mode) -> None:
    rng = np.random.default_rng(11)
    n = 64
    seqs = rng.integers(1, 64, n).astype(float)
    new = np.exp(rng.uniform(0, math.log(32768), n)).round()
    prefix = np.where(rng.random(n) < 0.5, 0.0, np.exp(rng.uniform(0, math.log(131072), n)).round())
    heads = rng.choice([1.0, 8.0, 16.0, 64.0, 128.0], n)
    kv_heads = np.minimum(heads, rng.choice([1.0, 8.0], n))
    dqk = rng.choice([64.0, 96.0, 128.0, 192.0], n)
    dv = np.where(rng.random(n) < 0.5, dqk, 128.0)
    window = rng.choice([0.0, 0.0, 128.0, 4096.0], n)
    cb = rng.choice([2.0, 1.0], n)
    kvb = np.minimum(cb, rng.choice([2.0, 1.0], n))
    # The exact FLOPs by direct summation: the roofline function is checked here too.
    scores = np.array([_causal_scores(int(s), int(p), int(w)) for s, p, w in zip(new, prefix, window, strict=True)])
    flops = 2.0 * seqs * heads * (dqk + dv) * scores
    min_bytes = seqs * (new * heads * (dqk * cb + dv * 2.0)
                        + (new + np.minimum(prefix, np.where(window > 0, window, np.inf))) * kv_heads * (dqk + dv) * kvb)
    base = js.load_hardware("b200", calibrated=False)
    peak = np.where(cb < 2, float(base.fp8_flop_per_s), float(base.bf16_flop_per_s))
    want = np.maximum(flops / peak, min_bytes / float(base.hbm_bytes_per_s))
    args = [jnp.asarray(a) for a in (seqs, new, prefix, heads, kv_heads, dqk, dv, window, cb, kvb)]
    roof = np.asarray(K.prefill_attention_roofline_s(base, *args))
    np.testing.assert_allclose(roof, want, rtol=1e-4)
    for trial in range(6):
        eff = _random_efficiency(rng)
        hw = eqx.tree_at(lambda h: h.eff, base, js.Efficiency(ctx_tiles=1.0, **eff))
        for mla in (False, True):
            t = np.asarray(K.prefill_attention_s(hw, *args, mla, mode))
            assert np.all(np.isfinite(t))
            assert np.all(t >= roof * (1 - 1e-5)), (trial, mla, eff)


# ---- zero work and gradients ----


def test_zero_tokens_cost_nothing_with_finite_gradients() -> None:
    hw = _hw()
    seqs, new = jnp.asarray([0.0, 0.0, 2.0]), jnp.asarray([0.0, 512.0, 0.0])  # no sequences, no tokens, neither
    for mode in (smooth.HARD, smooth.SMOOTH):
        def t(seqs, new, prefix, softmax_s, mode=mode):
            h = eqx.tree_at(lambda h: h.eff.ctx_softmax_s, hw, softmax_s)
            return K.prefill_attention_s(h, seqs, new, prefix, 8.0, 1.0, 128.0, 128.0, 0.0, 2.0, 2.0, False, mode)

        values, grads = jax.jit(jax.vmap(jax.value_and_grad(t, argnums=(0, 1, 2, 3)), (0, 0, None, None)))(
            seqs, new, 0.0, 5e-13)
        assert np.all(np.asarray(values) == 0.0)
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    # Through the step model's prefill attention as well (GQA and both MLA paths).
    for name in ("llama-3.1-70b", "deepseek-v3"):
        m = js.load_model(name)
        for absorbed in (False, True):
            def core(tokens, m=m, absorbed=absorbed):
                return prefill_core_attention_s(m, hw, js.Deployment(tp=8.0), tokens, tokens, tokens, absorbed,
                                                smooth.SMOOTH)[0]
            value, grad = jax.value_and_grad(core)(0.0)
            assert float(value) == 0.0 and np.isfinite(float(grad))


def test_gradients_in_the_parameters_match_finite_differences() -> None:
    hw = _hw()
    names = ("ctx_compute_frac", "ctx_softmax_s", "ctx_overlap_p", "ctx_cta_latency_s", "ctx_sched_p", "ctx_tail_frac")

    def t(values):
        h = FT.apply_params(hw, dict(zip(names, values, strict=True)))
        return jnp.log(K.prefill_attention_s(h, 4.0, 3000.0, 1000.0, 32.0, 8.0, 128.0, 128.0, 0.0, 2.0, 2.0))

    with x64():
        t = jax.jit(t)
        x = jnp.asarray([float(getattr(hw.eff, n)) for n in names], dtype=jnp.float64)
        g = np.asarray(jax.jit(jax.grad(t))(x))
        for i in range(len(names)):
            h = 1e-6 * float(x[i])
            fd = (float(t(x.at[i].add(h))) - float(t(x.at[i].add(-h)))) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=1e-4, abs=1e-9), names[i]


def test_smooth_converges_to_hard() -> None:
    hw = _hw()
    cold = smooth.Mode(smooth=True, temperature=1e-4)
    for new, prefix in ((1000.0, 0.0), (100.0, 300.0), (5000.0, 70000.0)):
        hard = _gqa(hw, 3.0, new, prefix, 16.0, 2.0, 128.0, 0.0)
        assert _gqa(hw, 3.0, new, prefix, 16.0, 2.0, 128.0, 0.0, mode=cold) == pytest.approx(hard, rel=1e-3)


# ---- the step model with the tile model on ----


# GQA with windows (-m slow: windowed tile counts are checked by default in test_sliding_window_reads_are_exact);
# MLA with DSA.
@pytest.mark.parametrize("name", [pytest.param("gpt-oss-120b", marks=pytest.mark.slow), "deepseek-v3.2"])
def test_step_cost_with_tiles_is_finite_and_differentiable(name: str) -> None:
    m = js.load_model(name)
    # GEMMs by the M-ramp form: the tiled GEMM's tile counts are steps in M that a finite difference would see.
    hw = FT.apply_params(js.load_hardware("h200-sxm"), {"gemm_tiles": 0.0})
    d = js.Deployment(tp=8.0, ep=8.0, two_batch_overlap=1.0)

    def total(prompts, tiles):
        b = js.StepBatch(decode_requests=16.0, decode_context=3000.0, prefill_tokens=prompts * 3000.0,
                         prefill_context=1000.0 + 1500.0, prefill_sequences=prompts)
        c = js.step_cost(m, FT.apply_params(hw, {"ctx_tiles": tiles}), d, b, smooth.SMOOTH)
        return c.total_s, (c.attention_s, c.flops)

    value_and_grad = jax.jit(jax.value_and_grad(total, has_aux=True), static_argnums=1)  # the switch is static
    (t, (attn_on, flops_on)), g = value_and_grad(2.0, 1.0)
    assert np.isfinite(float(t)) and np.isfinite(float(g)) and float(g) > 0
    fd = (float(value_and_grad(2.05, 1.0)[0][0]) - float(value_and_grad(1.95, 1.0)[0][0])) / 0.1
    assert float(g) == pytest.approx(fd, rel=0.05)
    # The tile model changes the attention time, not the FLOPs the step reports.
    (_, (attn_off, flops_off)), _ = value_and_grad(2.0, 0.0)
    assert float(flops_on) == pytest.approx(float(flops_off), rel=1e-6)
    assert float(attn_on) != pytest.approx(float(attn_off), rel=1e-3)


def test_fit_switches_the_tile_model_on_and_fits_its_parameters() -> None:
    fitted = {n for n, _ in FT.GROUPS["attention"]}
    assert {f for f in js.Efficiency.__dataclass_fields__ if f.startswith("ctx_")} - fitted == {"ctx_tiles"}
    assert FT.SWITCHES["attention"] == {"ctx_tiles": 1.0}
    assert float(js.Efficiency().ctx_tiles) == 0.0  # uncalibrated files keep the attention_s form


# ---- the sliding-window FLOP count ----


def test_sliding_window_reads_are_exact() -> None:
    m = js.load_model("gpt-oss-120b")
    full = eqx.tree_at(lambda x: x.sliding_layer_frac, m, 1.0)
    w = float(m.sliding_window)
    # s = 16384 new tokens, window w = 128: Σ_i min(i, 128) / s = 128 − 128·127/2 / 16384, not min(8192.5, 128).
    got = float(F.prefill_read_positions(full, 16384.0, 8192.5, 1.0))
    assert got == pytest.approx(w - w * (w - 1) / 2 / 16384, rel=1e-6)
    # The documented example: s = 16384, w = 8192 reads 6144 positions per token on average, not 8192.
    wide = eqx.tree_at(lambda x: x.sliding_window, full, 8192.0)
    # (Σ_{i ≤ 8192} i + 8192 × 8192) / 16384 = 8193/4 + 4096.
    assert float(F.prefill_read_positions(wide, 16384.0, 8192.5, 1.0)) == pytest.approx(6144.25, rel=1e-6)
    # A chunk after a prefix longer than the window reads exactly the window; no window: the context itself.
    assert float(F.prefill_read_positions(wide, 1024.0, 20000.0 + 512.5, 1.0)) == pytest.approx(8192.0, rel=1e-6)
    none = eqx.tree_at(lambda x: x.sliding_layer_frac, m, 0.0)
    assert float(F.prefill_read_positions(none, 1024.0, 20512.5, 1.0)) == 20512.5


# ---- spec fields ----


def _hardware_toml(tmp_path: Path, compute: str = "", efficiency: str = "") -> Path:
    text = Path(js.presets.specs_dir() / "hardware" / "h200-sxm.toml").read_text()
    text = text.replace("sm_count = 132", compute).replace("[efficiency]\n", "[efficiency]\n" + efficiency)
    path = tmp_path / "gpu.toml"
    path.write_text(text.replace('name = "h200-sxm"', 'name = "my-gpu"'))
    return path


def test_sm_count_and_ctx_fields_load(tmp_path: Path) -> None:
    assert float(js.load_hardware("b200").sm_count) == 148.0
    assert float(js.load_hardware("h200-sxm").sm_count) == 132.0
    # A user file without sm_count gets the documented default; a bad one is a clear error.
    assert float(js.load_hardware(str(_hardware_toml(tmp_path))).sm_count) == js.presets.DEFAULT_SM_COUNT
    with pytest.raises(SpecError, match="sm_count"):
        js.load_hardware(str(_hardware_toml(tmp_path, "sm_count = 0")))
    # Times ending in _s are written in µs; p-norm exponents must be ≥ 1.
    hw = js.load_hardware(str(_hardware_toml(tmp_path, efficiency="ctx_softmax_us = 5e-7\nctx_tiles = 1\n")))
    assert float(hw.eff.ctx_softmax_s) == pytest.approx(5e-13) and float(hw.eff.ctx_tiles) == 1.0
    with pytest.raises(SpecError, match="ctx_overlap_p"):
        js.load_hardware(str(_hardware_toml(tmp_path, efficiency="ctx_overlap_p = 0.5\n")))
