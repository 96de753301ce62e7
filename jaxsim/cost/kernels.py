"""Kernel time = roofline bound / shape-dependent efficiency.

The roofline bound of a kernel is max(FLOPs / peak FLOP/s, bytes / HBM bytes/s). Real kernels reach
only a fraction of either rate; that fraction depends on the kernel's shape and is given by the
hardware's `Efficiency` parameters. Every efficiency is clipped into (0, 1], and a kernel's fixed latency
(≥ 0) only adds to its time, so a predicted time is never below the roofline bound. Inside a serving step a
kernel pays the share `serving_latency_frac` ∈ [0, 1] of its fitted fixed latency (`serving_latency_s`); the
calibration fit sets that share to 1 (kernels measured in isolation).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Hardware

_MIN_EFF = 1e-6
_ACT_BYTES = 2.0  # activations enter a quantisation pass in BF16


def peak_flop_per_s(hw: Hardware, operand_bytes: ArrayLike) -> Array:
    """Dense tensor-core peak for operands of `operand_bytes` per element (2 BF16, 1 FP8, 0.5 FP4)."""
    b = jnp.asarray(operand_bytes)
    return jnp.where(b <= 0.5, hw.fp4_flop_per_s, jnp.where(b <= 1.0, hw.fp8_flop_per_s, hw.bf16_flop_per_s))


def dtype_scale(operand_bytes: ArrayLike, fp8_scale: ArrayLike, fp4_scale: ArrayLike) -> Array:
    """Factor on a compute fraction by operand precision: 1 for BF16, `fp8_scale` for FP8, `fp4_scale` for FP4."""
    b = jnp.asarray(operand_bytes)
    return jnp.where(b <= 0.5, fp4_scale, jnp.where(b <= 1.0, fp8_scale, 1.0))


def serving_latency_s(hw: Hardware, latency_s: ArrayLike) -> Array:
    """The part of a fitted per-call latency (≥ 0) paid in a serving step: `serving_latency_frac` (clipped into
    [0, 1]) of it."""
    return jnp.maximum(latency_s, 0.0) * jnp.clip(hw.eff.serving_latency_frac, 0.0, 1.0)


def _latency(hw: Hardware, operand_bytes: ArrayLike, latency_s: ArrayLike, quant_latency_s: ArrayLike) -> Array:
    """Fixed time of one kernel call: its latency, plus the activation-quantisation latency for FP8 / FP4."""
    low = jnp.asarray(operand_bytes) < 2.0
    return serving_latency_s(hw, jnp.maximum(latency_s, 0.0) + jnp.where(low, jnp.maximum(quant_latency_s, 0.0), 0.0))


def overlap_latency(work_s: ArrayLike, latency_s: ArrayLike, p: ArrayLike) -> Array:
    """A kernel's fixed latency combined with its roofline-limited time: `(work^p + latency^p)^(1/p)`, p ≥ 1.

    p = 1 adds them; a larger p lets the longer one hide the shorter. Never below either of them.
    """
    work_s, latency_s = jnp.asarray(work_s), jnp.maximum(jnp.asarray(latency_s), 0.0)
    p = jnp.maximum(p, 1.0)
    top = jnp.maximum(work_s, latency_s)
    pos = top > 0
    safe = jnp.where(pos, top, 1.0)  # double-where: no 0/0 in values or gradients
    def power(x: Array) -> Array:
        r = x / safe
        r_safe = jnp.where(r > 0, r, 1.0)
        return jnp.where(r > 0, r_safe**p, 0.0)

    norm = safe * (power(work_s) + power(latency_s)) ** (1.0 / p)
    return jnp.where(pos, jnp.maximum(norm, top), 0.0)


def saturating_frac(max_frac: ArrayLike, size: ArrayLike, half_size: ArrayLike) -> Array:
    """`max_frac × size / (size + half_size)`, clipped into [1e-6, 1]."""
    size = jnp.maximum(jnp.asarray(size), 0.0)
    frac = max_frac * size / (size + jnp.maximum(half_size, _MIN_EFF))
    return jnp.clip(frac, _MIN_EFF, 1.0)


def roofline_s(flops: ArrayLike, bytes_: ArrayLike, peak: ArrayLike, bw: ArrayLike, mode: Mode = HARD) -> Array:
    """Lower bound of a kernel's time: max(flops / peak, bytes / bw)."""
    return smooth.maximum(flops / peak, bytes_ / bw, mode)


def kernel_s(
    flops: ArrayLike,
    bytes_: ArrayLike,
    peak: ArrayLike,
    bw: ArrayLike,
    compute_frac: ArrayLike,
    memory_frac: ArrayLike,
    mode: Mode = HARD,
) -> Array:
    """Time of one kernel given the achieved fractions of peak compute and of HBM bandwidth."""
    cf = jnp.clip(compute_frac, _MIN_EFF, 1.0)
    mf = jnp.clip(memory_frac, _MIN_EFF, 1.0)
    return smooth.maximum(flops / (peak * cf), bytes_ / (bw * mf), mode)


def gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows: ArrayLike, operand_bytes: ArrayLike,
           mode: Mode = HARD, inner: ArrayLike = 0.0,
           shapes: Sequence[tuple[ArrayLike, ArrayLike]] | None = None) -> Array:
    """One or a few dense GEMMs on `rows` tokens (M) that together cost `flops` and `bytes_`.

    FP8 / FP4 operands (`operand_bytes` < 2) first pass over the BF16 activations to quantise them: a
    memory-bound kernel that reads `rows × inner` BF16 elements and writes them at the operand precision
    (`inner`: the summed input width K of the GEMMs this call stands for; 0 leaves the pass out). It runs before
    the GEMM, so its time adds to the GEMM's roofline-limited time.

    `hw.eff.gemm_tiles` picks the form: 0 prices the call as one kernel whose compute efficiency falls for small
    M, plus a fixed latency; 1 prices each GEMM of `shapes` with `tiled_gemm_s` (tiles, waves, split-K), plus
    the quantisation pass and one per-precision latency per GEMM. `shapes`: the (N, K) of every GEMM of the
    call; they share `flops` in proportion to their weights N·K and `bytes_` in proportion to their own traffic
    N·K·operand_bytes + M·(K + N)·2, so the call's totals stay as given. None: one GEMM of K = `inner` and
    N = flops / (2·rows·K).
    """
    def ramp(hw: Hardware, flops: Array, bytes_: Array, rows: Array, operand_bytes: Array, inner: Array, shapes):
        e = hw.eff
        top = e.gemm_compute_frac * dtype_scale(operand_bytes, e.gemm_fp8_scale, e.gemm_fp4_scale)
        cf = saturating_frac(top, rows, e.gemm_half_rows)
        peak = peak_flop_per_s(hw, operand_bytes)
        work = kernel_s(flops, bytes_, peak, hw.hbm_bytes_per_s, cf, e.gemm_memory_frac, mode)
        work = work + memory_bound_s(hw, _quant_bytes(rows, inner, operand_bytes))
        latency = _latency(hw, operand_bytes, e.gemm_latency_s, e.gemm_quant_latency_s)
        return overlap_latency(work, latency, e.gemm_latency_p)

    # A switch on the hardware: under `vmap` over configurations (not hardware) only the chosen form runs.
    arrays = [jnp.asarray(x, dtype=jnp.result_type(float)) for x in (flops, bytes_, rows, operand_bytes, inner)]
    shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in (*arrays, *jax.tree.leaves(shapes))))

    def form(fn):
        return lambda *a: jnp.broadcast_to(fn(*a), shape)

    return jax.lax.cond(hw.eff.gemm_tiles > 0.5, form(_tiled_call_s), form(ramp), hw, *arrays, shapes)


def _quant_bytes(rows: ArrayLike, inner: ArrayLike, operand_bytes: ArrayLike) -> Array:
    """Bytes of the FP8 / FP4 activation-quantisation pass over `rows × inner` BF16 elements (0 for BF16)."""
    low = jnp.asarray(operand_bytes) < 2.0
    return jnp.where(low, jnp.maximum(rows, 0.0) * jnp.maximum(inner, 0.0) * (_ACT_BYTES + operand_bytes), 0.0)


def _tiled_call_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows: ArrayLike, operand_bytes: ArrayLike,
                  inner: ArrayLike, shapes: Sequence[tuple[ArrayLike, ArrayLike]] | None) -> Array:
    """`gemm_s` with `gemm_tiles` = 1: the GEMMs of `shapes` one by one (see `gemm_s`)."""
    e = hw.eff
    wb = jnp.asarray(operand_bytes)
    rows = jnp.maximum(jnp.asarray(rows), 0.0)
    if shapes is None:
        k = jnp.maximum(inner, 1.0)
        shapes = ((flops / (2.0 * jnp.where(rows > 0, rows, 1.0) * k), k),)
    weights = [jnp.maximum(n, 0.0) * jnp.maximum(k, 0.0) for n, k in shapes]
    traffic = [jnp.where(w > 0, w * wb + rows * (jnp.maximum(k, 0.0) + jnp.maximum(n, 0.0)) * _ACT_BYTES, 0.0)
               for w, (n, k) in zip(weights, shapes, strict=True)]
    w_sum, t_sum = sum(weights), sum(traffic)
    w_safe, t_safe = jnp.where(w_sum > 0, w_sum, 1.0), jnp.where(t_sum > 0, t_sum, 1.0)
    work = sum(tiled_gemm_s(hw, flops * w / w_safe, bytes_ * t / t_safe, rows, n, k, wb)
               for w, t, (n, k) in zip(weights, traffic, shapes, strict=True))
    quant = _quant_bytes(rows, inner, wb) / (hw.hbm_bytes_per_s * jnp.clip(e.gemm_quant_memory_frac, _MIN_EFF, 1.0))
    calls = sum(jnp.where(w > 0, 1.0, 0.0) for w in weights)
    latency = by_precision(wb, e.gemm_tile_latency_s, e.gemm_fp8_tile_latency_s, e.gemm_fp4_tile_latency_s)
    return work + quant + jnp.where(rows > 0, calls * serving_latency_s(hw, latency), 0.0)


# CTA tile (M, N) the GEMM kernels run per operand precision (BF16, FP8, FP4): a tile's K-slice holds the same
# bytes in each (the area doubles as the operand bytes halve); picked by a search over {64, 128, 256}² on
# H200 and B200 (experiments/validation/kernels/proto/gemm.md).
TILE_ROWS = (64.0, 128.0, 128.0)
TILE_COLS = (128.0, 128.0, 256.0)
# Hopper FP8 kernels slow down when M is not a power of two, above the smallest M tile.
_MISALIGN_FROM_ROWS = 64.0


def tiled_gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows: ArrayLike, n: ArrayLike, k: ArrayLike,
                 operand_bytes: ArrayLike) -> Array:
    """Time (s) of one GEMM (`rows` × `k`) @ (`k` × `n`) without its latency and quantisation pass: the
    tile / wave model of `Efficiency.gemm_tiles`.

    The kernel computes whole CTA tiles (`TILE_ROWS` × `TILE_COLS` of the precision), T = ⌈M/t_m⌉·⌈N/t_n⌉, in
    waves over the `sm_count` SMs; BF16 kernels split K into s slices (at least `gemm_split_k_min` long) when
    there are fewer tiles than SMs. Waves W = T·s/S + q·(⌈T·s/S⌉ − T·s/S) mix balanced (q = 0) and whole (q = 1)
    waves. Compute time = `flops` / (peak · compute fraction) × the executed-to-useful work W·S·t_m·t_n / (s·M·N)
    (≥ 1) × (1 + k0 / (K/s)) (a per-tile prologue) × (1 + a·μ) (FP8, M > 64 between two powers of two P:
    μ = (P − M)/P · exp(−M / m_μ)). Traffic time = `bytes_` / (HBM · f(bytes)), f moving from
    `gemm_small_memory_frac` to the precision's fraction over `gemm_memory_size_bytes`; the two overlap as a
    p-norm. Never below max(flops / peak, bytes / HBM); 0 when rows, n or k is 0.
    """
    e = hw.eff
    wb = jnp.asarray(operand_bytes)
    live = (rows > 0) & (n > 0) & (k > 0)
    m, n, k = (jnp.where(live, x, 1.0) for x in (rows, n, k))  # double-where: no 0/0 in values or gradients
    flops, bytes_ = jnp.where(live, flops, 0.0), jnp.where(live, bytes_, 0.0)
    tile_m, tile_n = by_precision(wb, *TILE_ROWS), by_precision(wb, *TILE_COLS)
    sms = jnp.maximum(hw.sm_count, 1.0)
    tiles = jnp.ceil(m / tile_m) * jnp.ceil(n / tile_n)
    split_max = jnp.maximum(k / jnp.maximum(e.gemm_split_k_min, 1.0), 1.0)
    split = jnp.where(wb > 1.0, jnp.clip(sms / tiles, 1.0, split_max), 1.0)
    w_soft = tiles * split / sms
    w_hard = jnp.maximum(jnp.ceil(w_soft - 1e-4), w_soft)
    waves = w_soft + jnp.clip(e.gemm_wave_frac, 0.0, 1.0) * (w_hard - w_soft)
    padding = jnp.maximum(waves * sms * tile_m * tile_n / (split * m * n), 1.0)
    k0 = jnp.maximum(by_precision(wb, e.gemm_k_prologue, e.gemm_fp8_k_prologue, e.gemm_fp4_k_prologue), 0.0)
    pow2 = jnp.exp2(jnp.ceil(jnp.log2(jnp.maximum(m, 1.0)) - 1e-4))
    fp8 = (wb > 0.5) & (wb <= 1.0) & (m > _MISALIGN_FROM_ROWS)
    misalign = jnp.where(fp8, jnp.maximum(pow2 - m, 0.0) / pow2
                         * jnp.exp(-m / jnp.maximum(e.gemm_fp8_misalign_rows, _MIN_EFF)), 0.0)
    cf = jnp.clip(by_precision(wb, e.gemm_tile_compute_frac, e.gemm_fp8_tile_compute_frac,
                               e.gemm_fp4_tile_compute_frac), _MIN_EFF, 1.0)
    t_compute = (flops / (peak_flop_per_s(hw, wb) * cf) * padding * (1.0 + k0 * split / k)
                 * (1.0 + jnp.maximum(e.gemm_fp8_misalign_amp, 0.0) * misalign))
    large = jnp.clip(by_precision(wb, e.gemm_tile_memory_frac, e.gemm_fp8_tile_memory_frac,
                                  e.gemm_fp4_tile_memory_frac), _MIN_EFF, 1.0)
    small = jnp.clip(e.gemm_small_memory_frac, _MIN_EFF, 1.0)
    mf = large + (small - large) * jnp.exp(-bytes_ / jnp.maximum(e.gemm_memory_size_bytes, 1.0))
    t_memory = bytes_ / (hw.hbm_bytes_per_s * mf)
    return jnp.where(live, pnorm(t_compute, t_memory, e.gemm_tile_work_p), 0.0)


def grouped_gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows_per_expert: ArrayLike,
                   operand_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Routed experts as one grouped GEMM: compute efficiency falls with few tokens per expert; plus a fixed
    latency of the whole MoE kernel sequence (routing, permutation, grouped GEMMs, finalisation)."""
    e = hw.eff
    top = e.moe_compute_frac * dtype_scale(operand_bytes, e.moe_fp8_scale, e.moe_fp4_scale)
    cf = saturating_frac(top, rows_per_expert, e.moe_half_tokens)
    work = kernel_s(flops, bytes_, peak_flop_per_s(hw, operand_bytes), hw.hbm_bytes_per_s, cf, e.moe_memory_frac, mode)
    return overlap_latency(work, _latency(hw, operand_bytes, e.moe_latency_s, e.moe_quant_latency_s), e.moe_latency_p)


def by_precision(operand_bytes: ArrayLike, bf16: ArrayLike, fp8: ArrayLike, fp4: ArrayLike) -> Array:
    """The value for the operand precision: `bf16` (2 B), `fp8` (1 B) or `fp4` (0.5 B)."""
    b = jnp.asarray(operand_bytes)
    return jnp.where(b <= 0.5, fp4, jnp.where(b <= 1.0, fp8, bf16))


def pnorm(a: ArrayLike, b: ArrayLike, p: ArrayLike) -> Array:
    """`(a^p + b^p)^(1/p)` of two times ≥ 0 with p ≥ 1: between max(a, b) and a + b, never below either."""
    return overlap_latency(a, b, p)


def moe_layer_s(hw: Hardware, assignments: ArrayLike, active_experts: ArrayLike, instance_tokens: ArrayLike,
                hidden: ArrayLike, inter_per_gpu: ArrayLike, top_k: ArrayLike, local_experts: ArrayLike,
                weight_bytes: ArrayLike, activation_bytes: ArrayLike = 2.0) -> Array:
    """One MoE layer's routed experts on one GPU as the fused MoE kernels run it (`Efficiency.moe_terms` = 1).

    `assignments` token-expert rows land on the GPU's `active_experts` (of its `local_experts`) experts, each a
    gated FFN of `hidden` × `inter_per_gpu`; the instance routes `instance_tokens` tokens to `top_k` experts each.
    Time = ((grouped GEMMs + row pass + token pass)^p + latency^p)^(1/p) where
    - grouped GEMMs: compute (fraction ramping in rows per expert and in `inter_per_gpu`) and weight + row traffic
      at the MoE memory fraction, overlapping as a p-norm — never below their roofline;
    - row pass: every routed row is permuted, quantised, activated and un-permuted (bytes ∝ hidden, inter);
    - token pass: routing / top-k over every token of the instance, not divided by EP (the kernel scans all of
      them); ∝ hidden bytes plus a cost per token-expert pair;
    - latency: the call's fixed time plus a time per expert held on the GPU (the serving share applies).
    """
    e = hw.eff
    wb = jnp.asarray(weight_bytes)
    a = jnp.maximum(jnp.asarray(assignments), 0.0)
    n = jnp.maximum(active_experts, 1e-6)
    rows = a / n
    w = 3.0 * hidden * inter_per_gpu
    top = e.moe_compute_frac * dtype_scale(wb, e.moe_fp8_scale, e.moe_fp4_scale)
    half_rows = by_precision(wb, e.moe_half_tokens, e.moe_fp8_half_tokens, e.moe_fp4_half_tokens)
    half_inter = jnp.maximum(by_precision(wb, e.moe_half_inter, e.moe_fp8_half_inter, e.moe_fp4_half_inter), 0.0)
    cf = saturating_frac(top, rows, half_rows) * inter_per_gpu / (inter_per_gpu + half_inter)
    t_compute = 2.0 * a * w / (peak_flop_per_s(hw, wb) * jnp.clip(cf, _MIN_EFF, 1.0))
    traffic = n * w * wb + a * (2.0 * hidden + 3.0 * inter_per_gpu) * activation_bytes
    t_memory = traffic / (hw.hbm_bytes_per_s * jnp.clip(e.moe_memory_frac, _MIN_EFF, 1.0))
    gemms = pnorm(t_compute, t_memory, e.moe_work_p)
    row_bytes = by_precision(wb, e.moe_row_bytes, e.moe_fp8_row_bytes, e.moe_fp4_row_bytes)
    row_pass = a * (jnp.maximum(row_bytes, 0.0) * hidden + jnp.maximum(e.moe_row_inter_bytes, 0.0) * inter_per_gpu)
    token_bytes = by_precision(wb, e.moe_token_bytes, e.moe_fp8_token_bytes, e.moe_fp4_token_bytes)
    token_pass = jnp.maximum(instance_tokens, 0.0) * jnp.maximum(token_bytes, 0.0) * hidden
    work = gemms + (row_pass + token_pass) / hw.hbm_bytes_per_s
    work = work + jnp.maximum(instance_tokens, 0.0) * top_k * jnp.maximum(e.moe_pair_cost_s, 0.0)
    per_expert = by_precision(wb, e.moe_expert_latency_s, e.moe_fp8_expert_latency_s, e.moe_fp4_expert_latency_s)
    latency = serving_latency_s(hw, jnp.maximum(e.moe_latency_s, 0.0) + jnp.maximum(per_expert, 0.0) * local_experts)
    return jnp.where(a > 0, overlap_latency(work, latency, e.moe_latency_p), 0.0)


def attention_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, context: ArrayLike,
                compute_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Core attention (FlashAttention / FlashMLA style): bandwidth efficiency falls for short contexts, and so
    does compute efficiency when `attn_compute_half_context` > 0 (else it is flat); plus a fixed kernel latency."""
    e = hw.eff
    mf = saturating_frac(e.attn_memory_frac, context, e.attn_half_context)
    top = e.attn_compute_frac * dtype_scale(compute_bytes, e.attn_fp8_scale, e.attn_fp8_scale)
    cf = jnp.where(e.attn_compute_half_context > 0, saturating_frac(top, context, e.attn_compute_half_context), top)
    work = kernel_s(flops, bytes_, peak_flop_per_s(hw, compute_bytes), hw.hbm_bytes_per_s, cf, mf, mode)
    return overlap_latency(work, serving_latency_s(hw, e.attn_latency_s), e.attn_latency_p)


def decode_attention_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, context: ArrayLike,
                       compute_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Core attention of decode (one or a few queries per request reading its KV cache) with the `decode_attn_*`
    parameters: bandwidth efficiency falls for short contexts, compute efficiency is flat (decode kernels
    use the tensor cores poorly when few query heads share a KV head); plus a fixed kernel latency."""
    e = hw.eff
    mf = saturating_frac(e.decode_attn_memory_frac, context, e.decode_attn_half_context)
    work = kernel_s(flops, bytes_, peak_flop_per_s(hw, compute_bytes), hw.hbm_bytes_per_s,
                    e.decode_attn_compute_frac, mf, mode)
    return overlap_latency(work, serving_latency_s(hw, e.decode_attn_latency_s), e.attn_latency_p)


def memory_bound_s(hw: Hardware, bytes_: ArrayLike) -> Array:
    """Elementwise / normalisation kernels: bytes at the GEMM memory efficiency."""
    return bytes_ / (hw.hbm_bytes_per_s * jnp.clip(hw.eff.gemm_memory_frac, _MIN_EFF, 1.0))
