"""Kernel time = roofline bound / shape-dependent efficiency.

The roofline bound of a kernel is max(FLOPs / peak FLOP/s, bytes / HBM bytes/s). Real kernels reach
only a fraction of either rate; that fraction depends on the kernel's shape and is given by the
hardware's `Efficiency` parameters. Every efficiency is clipped into (0, 1], and a kernel's fixed latency
(≥ 0) only adds to its time, so a predicted time is never below the roofline bound. Inside a serving step a
kernel pays the share `serving_latency_frac` ∈ [0, 1] of its fitted fixed latency (`serving_latency_s`); the
calibration fit sets that share to 1 (kernels measured in isolation).

Decode attention has two forms, chosen by `Efficiency.dec_paths`: `decode_attention_s` (roofline over saturating
fractions, plus a latency) and `decode_paths_s` (launch and split latencies, a cost per work item, memory with
occupancy and compute, overlapped as a p-norm, per kernel path); `step.decode_attention_s` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Hardware

_MIN_EFF = 1e-6
_ACT_BYTES = 2.0  # activations enter a quantisation pass in BF16


def tile_count(x: ArrayLike, mode: Mode = HARD) -> Array:
    """Whole tiles covering `x` tile lengths: ceil(x), with a relative tolerance of 4e-6 so that a count that is
    a whole number up to float32 rounding (128.00002 rows / 128) is not one tile more depending on how it was
    computed."""
    return smooth.ceil(jnp.asarray(x) * (1.0 - 4e-6), mode)


def by_precision(operand_bytes: ArrayLike, bf16: ArrayLike, fp8: ArrayLike, fp4: ArrayLike) -> Array:
    """The value for the operand precision: `bf16` (2 B), `fp8` (1 B) or `fp4` (0.5 B)."""
    b = jnp.asarray(operand_bytes)
    return jnp.where(b <= 0.5, fp4, jnp.where(b <= 1.0, fp8, bf16))


def peak_flop_per_s(hw: Hardware, operand_bytes: ArrayLike) -> Array:
    """Dense tensor-core peak for operands of `operand_bytes` per element (2 BF16, 1 FP8, 0.5 FP4)."""
    return by_precision(operand_bytes, hw.bf16_flop_per_s, hw.fp8_flop_per_s, hw.fp4_flop_per_s)


def dtype_scale(operand_bytes: ArrayLike, fp8_scale: ArrayLike, fp4_scale: ArrayLike) -> Array:
    """Factor on a compute fraction by operand precision: 1 for BF16, `fp8_scale` for FP8, `fp4_scale` for FP4."""
    return by_precision(operand_bytes, 1.0, fp8_scale, fp4_scale)


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
    return pnorm((jnp.asarray(work_s), jnp.maximum(jnp.asarray(latency_s), 0.0)), p)


def pnorm(terms: tuple[ArrayLike, ...], p: ArrayLike) -> Array:
    """`(Σ term^p)^(1/p)` of non-negative terms with p clipped to ≥ 1: never below the largest term, at most their
    sum; 0 when all are 0, with finite gradients."""
    terms = tuple(jnp.asarray(t) for t in terms)
    p = jnp.maximum(p, 1.0)
    top = reduce(jnp.maximum, terms)
    pos = top > 0
    safe = jnp.where(pos, top, 1.0)  # double-where: no 0/0 in values or gradients
    def power(x: Array) -> Array:
        r = x / safe
        r_safe = jnp.where(r > 0, r, 1.0)
        return jnp.where(r > 0, r_safe**p, 0.0)

    norm = safe * sum(power(t) for t in terms) ** (1.0 / p)
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
    e = hw.eff
    if e.gemm_tiles > 0.5:  # a static switch: the traced program holds one form
        return _tiled_call_s(hw, flops, bytes_, rows, operand_bytes, inner, shapes)
    top = e.gemm_compute_frac * dtype_scale(operand_bytes, e.gemm_fp8_scale, e.gemm_fp4_scale)
    cf = saturating_frac(top, rows, e.gemm_half_rows)
    work = kernel_s(flops, bytes_, peak_flop_per_s(hw, operand_bytes), hw.hbm_bytes_per_s, cf, e.gemm_memory_frac, mode)
    quant_bytes = _quant_bytes(rows, inner, operand_bytes)
    work = work + memory_bound_s(hw, quant_bytes)
    latency = _latency(hw, operand_bytes, e.gemm_latency_s, e.gemm_quant_latency_s)
    return overlap_latency(work, latency, e.gemm_latency_p)


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
    quant = memory_pass_s(hw, _quant_bytes(rows, inner, wb), e.gemm_quant_memory_frac)
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
    tiles = tile_count(m / tile_m) * tile_count(n / tile_n)
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
    return jnp.where(live, pnorm((t_compute, t_memory), e.gemm_tile_work_p), 0.0)


def grouped_gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows_per_expert: ArrayLike,
                   operand_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Routed experts as one grouped GEMM: compute efficiency falls with few tokens per expert; plus a fixed
    latency of the whole MoE kernel sequence (routing, permutation, grouped GEMMs, finalisation)."""
    e = hw.eff
    top = e.moe_compute_frac * dtype_scale(operand_bytes, e.moe_fp8_scale, e.moe_fp4_scale)
    cf = saturating_frac(top, rows_per_expert, e.moe_half_tokens)
    work = kernel_s(flops, bytes_, peak_flop_per_s(hw, operand_bytes), hw.hbm_bytes_per_s, cf, e.moe_memory_frac, mode)
    return overlap_latency(work, _latency(hw, operand_bytes, e.moe_latency_s, e.moe_quant_latency_s), e.moe_latency_p)


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
    gemms = pnorm((t_compute, t_memory), e.moe_work_p)
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


# Prefill attention tiles: one CTA computes one 128-row query tile of one head, stepping over 128-key KV tiles.
PREFILL_TILE = 128.0
_SHORT_KEYS = 16.0  # a one-tile sequence computes its keys rounded up to this many
_NO_WINDOW = 1e9  # tiles: a band wider than any sequence


class PrefillShape(NamedTuple):
    """Geometry of one prefill-attention call (all per GPU; see `prefill_attention_s`)."""

    on: Array  # 1 where there is work (sequences > 0 and new tokens > 0)
    seqs: Array  # sequences (1 where off)
    new: Array  # new tokens per sequence (1 where off)
    prefix: Array  # cached / earlier-chunk positions before them, ≥ 0
    window: Array  # KV positions per query, 0 = no limit
    flops: Array  # exact causal FLOPs: 2 (d_qk + d_v) per score, Σ_i min(prefix + i, window) scores
    min_bytes: Array  # compulsory HBM bytes: Q and K/V read once, O written once


def _prefill_shape(sequences: ArrayLike, new_tokens: ArrayLike, prefix: ArrayLike, heads: ArrayLike,
                   kv_heads: ArrayLike, qk_dim: ArrayLike, v_dim: ArrayLike, window: ArrayLike,
                   compute_bytes: ArrayLike, kv_bytes: ArrayLike) -> PrefillShape:
    on = (jnp.asarray(sequences) > 0) & (jnp.asarray(new_tokens) > 0)
    seqs = jnp.where(on, sequences, 1.0)  # double-where: finite values and gradients with no work
    new = jnp.where(on, new_tokens, 1.0)
    prefix = jnp.maximum(jnp.asarray(prefix), 0.0)
    window = jnp.maximum(jnp.asarray(window), 0.0)
    limit = jnp.where(window > 0, window, _NO_WINDOW * PREFILL_TILE)
    # Σ_{i=1..s} min(prefix + i, limit) = s·(prefix + (s + 1)/2) − the positions the window cuts off.
    k = jnp.clip(prefix + new - limit, 0.0, new)
    cut = k * jnp.maximum(prefix - limit, 0.0) + 0.5 * k * (k + 1.0)
    scores = new * (prefix + 0.5 * (new + 1.0)) - cut
    flops = 2.0 * seqs * heads * (qk_dim + v_dim) * scores
    kv_positions = new + jnp.minimum(prefix, limit)
    min_bytes = seqs * (new * heads * (qk_dim * compute_bytes + v_dim * _ACT_BYTES)
                        + kv_positions * kv_heads * (qk_dim + v_dim) * kv_bytes)
    return PrefillShape(on, seqs, new, prefix, window, flops, min_bytes)


def prefill_attention_roofline_s(hw: Hardware, sequences: ArrayLike, new_tokens: ArrayLike, prefix: ArrayLike,
                                 heads: ArrayLike, kv_heads: ArrayLike, qk_dim: ArrayLike, v_dim: ArrayLike,
                                 window: ArrayLike, compute_bytes: ArrayLike, kv_bytes: ArrayLike,
                                 mode: Mode = HARD) -> Array:
    """The roofline bound of `prefill_attention_s` (same arguments): max(exact causal FLOPs / peak of the compute
    precision, compulsory bytes / HBM bandwidth); 0 without work."""
    g = _prefill_shape(sequences, new_tokens, prefix, heads, kv_heads, qk_dim, v_dim, window, compute_bytes,
                       kv_bytes)
    bound = roofline_s(g.flops, g.min_bytes, peak_flop_per_s(hw, compute_bytes), hw.hbm_bytes_per_s, mode)
    return jnp.where(g.on, bound, 0.0)


def prefill_attention_s(hw: Hardware, sequences: ArrayLike, new_tokens: ArrayLike, prefix: ArrayLike,
                        heads: ArrayLike, kv_heads: ArrayLike, qk_dim: ArrayLike, v_dim: ArrayLike,
                        window: ArrayLike, compute_bytes: ArrayLike, kv_bytes: ArrayLike, mla: bool = False,
                        mode: Mode = HARD) -> Array:
    """Causal prefill (context) attention, FlashAttention-style: query tiles, KV tiles, waves over the SMs.

    One CTA owns one 128-row query tile of one head and steps over 128-key KV tiles: those of the prefix and the
    causal triangle (the diagonal tile in full), or a band of (window + `ctx_window_extra`)/128 + 1 tiles. One KV
    tile costs its tensor-core time and its softmax time in a p-norm (`ctx_overlap_p`), plus a fixed step cost;
    a CTA adds a fixed cost and the masked diagonal's extra work. The CTAs of all sequences and heads spread over
    `hw.sm_count` SMs (balanced waves + a last-wave tail) and the heaviest CTA bounds the call (`ctx_sched_p`);
    the compulsory bytes at `ctx_memory_frac` of HBM are a floor; a memory-bound pre-pass (RoPE, KV-cache write)
    and a per-call latency (`serving_latency_frac` of it in serving) add. Form and fit:
    experiments/validation/kernels/proto/context_attention.md. Never below `prefill_attention_roofline_s`: the
    tiles cover every score, fractions are ≤ 1 and every other term is ≥ 0.

    Args (per GPU; counts are floats and may be fractional, e.g. a micro-batch's share):
        sequences: prompts in the call; new_tokens: new tokens per prompt (s); prefix: KV positions before them
            (cached prefix, earlier chunks); 0 sequences or tokens cost 0.
        heads, kv_heads: query and KV heads on this GPU; qk_dim, v_dim: head dims of the scores and the values.
        window: KV positions each query may attend (sliding window or DSA top-k), 0 = all.
        compute_bytes: bytes per element of the attention math (2 BF16, 1 FP8); kv_bytes: of the KV cache.
        mla: MLA's kernel (`ctx_mla_*` parameters, native head dims) instead of GQA's (dims padded to powers of 2).
        mode: HARD or SMOOTH (smooth tile counts, smooth max of the compute and memory times).
    """
    e = hw.eff
    tile = PREFILL_TILE
    g = _prefill_shape(sequences, new_tokens, prefix, heads, kv_heads, qk_dim, v_dim, window, compute_bytes,
                       kv_bytes)
    sms = jnp.maximum(hw.sm_count, 1.0)
    # Tiles (inputs only). q: query tiles per (sequence, head); p: KV tiles of the prefix; band: KV tiles a query
    # tile may visit. Query tile j (1..q) visits min(p + j, band) KV tiles: u of them before the band saturates.
    q = tile_count(g.new / tile, mode)
    p = tile_count(g.prefix / tile, mode)
    band = jnp.where(g.window > 0, (g.window + jnp.maximum(e.ctx_window_extra, 0.0)) / tile + 1.0, _NO_WINDOW)
    u = jnp.clip(band - p, 0.0, q)
    tiles = u * p + 0.5 * u * (u + 1.0) + (q - u) * band
    longest = jnp.minimum(p + q, band)
    # A one-tile sequence computes its keys rounded up to 16 in its diagonal tile: a fraction `diag` of a tile.
    diag = jnp.where(q > 1.0, 1.0, jnp.clip(tile_count(g.new / _SHORT_KEYS, mode) * _SHORT_KEYS / tile, 0.0, 1.0))
    tiles = tiles - (1.0 - diag)
    longest = longest - (1.0 - diag)
    if mla:
        dims = qk_dim + v_dim
        low_kv = jnp.asarray(kv_bytes) < 2.0
        cf = jnp.where(low_kv, e.ctx_mla_kv8_compute_frac, e.ctx_mla_compute_frac)
        cta_s = jnp.where(low_kv, e.ctx_mla_kv8_cta_latency_s, e.ctx_mla_cta_latency_s)
        call_s = e.ctx_mla_latency_s
    else:
        pow2 = lambda d: 2.0 ** jnp.ceil(jnp.log2(jnp.maximum(d, 1.0)))  # noqa: E731
        dims = pow2(qk_dim) + pow2(v_dim)
        cf = jnp.where(jnp.asarray(compute_bytes) < 2.0, e.ctx_fp8_compute_frac,
                       jnp.where(jnp.asarray(kv_bytes) < 2.0, e.ctx_kv8_compute_frac, e.ctx_compute_frac))
        cta_s = e.ctx_cta_latency_s
        call_s = e.ctx_latency_s
    peak = peak_flop_per_s(hw, compute_bytes)
    # One KV tile of one CTA, in SM-seconds (an SM is 1/sms of the GPU): tensor cores ⊕ softmax, + a step cost.
    mma = tile * tile * 2.0 * dims / (peak * jnp.clip(cf, _MIN_EFF, 1.0)) * sms
    softmax = tile * tile * jnp.maximum(e.ctx_softmax_s, 0.0) * sms
    t_tile = overlap_latency(mma, softmax, e.ctx_overlap_p) + jnp.maximum(e.ctx_kv_step_s, 0.0) * dims / 256.0
    t_cta = jnp.maximum(cta_s, 0.0) + jnp.maximum(e.ctx_diag_tiles, 0.0) * diag * t_tile
    per_head = tiles * t_tile + q * t_cta  # SM-seconds of one (sequence, head)
    balanced = g.seqs * heads * per_head / sms + jnp.clip(e.ctx_tail_frac, 0.0, 1.0) * per_head / q
    critical = longest * t_tile + t_cta  # the heaviest CTA: a full row of KV tiles
    t_attn = overlap_latency(balanced, critical, e.ctx_sched_p)
    t_mem = g.min_bytes / (hw.hbm_bytes_per_s * jnp.clip(e.ctx_memory_frac, _MIN_EFF, 1.0))
    work = smooth.maximum(t_attn, t_mem, mode)
    # Pre-pass over the new tokens: Q read and written (RoPE), K/V read and written to the cache at its precision.
    pre_bytes = g.seqs * g.new * (heads * qk_dim * 2.0 * _ACT_BYTES
                                  + kv_heads * (qk_dim + v_dim) * (_ACT_BYTES + kv_bytes))
    pre = memory_pass_s(hw, pre_bytes, e.ctx_pre_memory_frac)
    return jnp.where(g.on, work + pre + serving_latency_s(hw, call_s), 0.0)


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


DECODE_TILE = 128.0  # KV positions per tile of a decode work item (`dec_tile_item_latency_s` is per tile)


class DecodeShape(NamedTuple):
    """The shape of one decode-attention kernel call on one GPU, what `decode_paths_s` needs beyond FLOPs and bytes.

    Args:
        requests: decode requests in the call.
        read: KV positions each request reads (window- or top-k-truncated).
        context: KV positions before the sliding window (≥ read; = read for full-attention layers).
        heads: query heads on the GPU.
        kv_heads: KV heads on the GPU (≥ 1; MLA: 1, the shared latent).
        head_dim: dimension of one head (GQA; unused for MLA).
        kv_bytes: bytes per KV element (2 BF16, 1 FP8).
        queries: query tokens per request (1 + MTP draft tokens).
        mla: absorbed MLA (static) or GQA / MHA.
    """

    requests: ArrayLike
    read: ArrayLike
    context: ArrayLike
    heads: ArrayLike
    kv_heads: ArrayLike
    head_dim: ArrayLike
    kv_bytes: ArrayLike
    queries: ArrayLike
    mla: bool


def decode_paths_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, shape: DecodeShape) -> Array:
    """Decode attention by kernel path (`dec_*` / `dec_mla_*` parameters, used when `dec_paths` = 1):

        t = L + W + (F^p + M^p + C^p)^(1/p)
        F = items × cost per item                 items = requests × KV heads (GQA) or requests (MLA)
        M = bytes / (HBM × frac(mf × occ))        occ = n / (n + ctas_half), n = resident blocks with split KV
        C = flops / (BF16 peak × frac(cf))

    GQA / MHA paths: MHA (group = heads / KV heads of 1), BF16-KV GQA, FP8-KV GQA; FP8 GQA with head_dim ≥ 128 launches
    faster (the grouped-query FP8 kernel), and FP8 GQA with group × head_dim above `dec_fp8_heavy_group_dim` switches
    (a sigmoid) to a path `1 + dec_fp8_heavy_slowdown` times slower per item and per byte. The cost per item is the
    path's cost × (head_dim / 128)^power × slowdown, plus a cost per query row (heads per KV head × queries per
    request) × head_dim / 128 and one per tile of 128 KV positions; the memory fraction falls for short KV rows
    (head_dim × KV bytes against `dec_row_bytes_half`); blocks n = items × (1 + read / split_chunk). BF16 KV with a
    sliding window (context > read) pays for the tiles beyond the window: `dec_bf16_window_latency_s` × y / (y +
    `dec_window_tiles_half`), y = items × (context − read) / 128 (its kernel splits the whole context into blocks,
    up to a cap). MLA (absorbed,
    the latent read once per request): cost per request fixed + per query head and query token, blocks
    n = requests × splits with splits = 1 + x / (1 + x / max_splits), x = read / split_chunk; memory and compute
    fractions by KV precision. L = launch latency + split latency × read / (read + split_half_context), both paid at
    `serving_latency_frac`.

    Never below max(flops / peak, bytes / HBM) (fractions ≤ 1, F and L ≥ 0, p ≥ 1): the compute term uses the BF16
    peak, the lowest tensor-core peak. 0 without requests, with finite gradients.
    """
    e = hw.eff
    on = jnp.asarray(shape.requests) > 0
    requests = jnp.where(on, shape.requests, 1.0)  # double-where: the unused branch stays finite
    read = jnp.maximum(jnp.asarray(shape.read), 0.0)
    share = jnp.clip(e.serving_latency_frac, 0.0, 1.0)
    pos = lambda x: jnp.maximum(x, 0.0)  # noqa: E731
    frac = lambda x: jnp.clip(x, _MIN_EFF, 1.0)  # noqa: E731
    fp8 = jnp.asarray(shape.kv_bytes) < 1.5
    if shape.mla:
        items = requests
        item_s = pos(e.dec_mla_item_latency_s) + pos(e.dec_mla_head_item_latency_s) * shape.heads * shape.queries
        x = read / jnp.maximum(e.dec_mla_split_chunk, 1.0)
        blocks = requests * (1.0 + x / (1.0 + x / jnp.maximum(e.dec_mla_max_splits, 1.0)))
        occ = blocks / (blocks + pos(e.dec_mla_ctas_half))
        mf = jnp.where(fp8, e.dec_mla_fp8_memory_frac, e.dec_mla_bf16_memory_frac) * occ
        cf = jnp.where(fp8, e.dec_mla_fp8_compute_frac, e.dec_mla_bf16_compute_frac)
        launch, window_s = e.dec_mla_latency_s, 0.0
        split_s, split_half, p = e.dec_mla_split_latency_s, e.dec_mla_split_half_context, e.dec_mla_overlap_p
    else:
        kv_heads = jnp.maximum(shape.kv_heads, 1.0)
        head_dim = jnp.maximum(shape.head_dim, 1.0)
        group = shape.heads / kv_heads
        mha = group < 1.5
        fp8_gqa = fp8 & ~mha
        xqa = fp8_gqa & (head_dim >= 128.0)
        heavy_at = jnp.maximum(e.dec_fp8_heavy_group_dim, 1.0)
        heavy = jnp.where(fp8_gqa, jax.nn.sigmoid((group * head_dim - heavy_at) / (0.1 * heavy_at)), 0.0)
        slow = 1.0 + pos(e.dec_fp8_heavy_slowdown) * heavy
        d = head_dim / 128.0
        path_s = jnp.where(mha, e.dec_mha_item_latency_s,
                           jnp.where(fp8, e.dec_fp8_gqa_item_latency_s, e.dec_bf16_gqa_item_latency_s))
        item_s = (pos(path_s) * d ** e.dec_item_head_dim_power * slow
                  + pos(e.dec_query_item_latency_s) * group * shape.queries * d
                  + pos(e.dec_tile_item_latency_s) * tile_count(read / DECODE_TILE))
        items = requests * kv_heads
        row = head_dim * shape.kv_bytes
        path_mf = jnp.where(fp8, jnp.where(mha, e.dec_fp8_mha_memory_frac, e.dec_fp8_gqa_memory_frac),
                            e.dec_bf16_memory_frac)
        blocks = items * (1.0 + read / jnp.maximum(e.dec_split_chunk, 1.0))
        occ = blocks / (blocks + pos(e.dec_ctas_half))
        mf = frac(path_mf) * row / (row + pos(e.dec_row_bytes_half)) / slow * occ
        cf = e.dec_compute_frac
        outside = items * jnp.maximum(jnp.asarray(shape.context) - read, 0.0) / DECODE_TILE
        window_s = jnp.where(fp8, 0.0, pos(e.dec_bf16_window_latency_s) * outside
                             / (outside + jnp.maximum(e.dec_window_tiles_half, 1.0)))
        launch = jnp.where(xqa, e.dec_fp8_gqa_latency_s, e.dec_latency_s)
        split_s, split_half, p = e.dec_split_latency_s, e.dec_split_half_context, e.dec_overlap_p
    fixed = (pos(launch) + pos(split_s) * read / (read + jnp.maximum(split_half, 1.0))) * share
    work = pnorm((items * item_s, bytes_ / (hw.hbm_bytes_per_s * frac(mf)), flops / (hw.bf16_flop_per_s * frac(cf))), p)
    return jnp.where(on, fixed + window_s + work, 0.0)


def memory_bound_s(hw: Hardware, bytes_: ArrayLike) -> Array:
    """Elementwise / normalisation kernels: bytes at the GEMM memory efficiency."""
    return memory_pass_s(hw, bytes_, hw.eff.gemm_memory_frac)


def memory_pass_s(hw: Hardware, bytes_: ArrayLike, memory_frac: ArrayLike) -> Array:
    """A memory-bound pass over `bytes_` at `memory_frac` (clipped into (0, 1]) of the HBM bandwidth."""
    return bytes_ / (hw.hbm_bytes_per_s * jnp.clip(memory_frac, _MIN_EFF, 1.0))
