"""The specs: frozen pytrees describing a model, a GPU system, a deployment, a workload and an SLO.

Every numeric field, counts included, is a float array so that it can be swept with `vmap` and
differentiated without recompiling. Only names and code-path choices (the attention kind) are static.
Units are SI (seconds, bytes, FLOP, FLOP/s, bytes/s); counts are plain numbers.
Edit a spec with `eqx.tree_at`, e.g. `eqx.tree_at(lambda h: h.hbm_bytes_per_s, hw, 2 * hw.hbm_bytes_per_s)`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike


def _f(x: ArrayLike) -> Array:
    """Convert to the default float dtype (float32, or float64 under `jax_enable_x64`)."""
    return jnp.asarray(x, dtype=jnp.result_type(float))


def _num(default: float | None = None):
    if default is None:
        return eqx.field(converter=_f)
    return eqx.field(converter=_f, default=default)


ATTENTION_KINDS = ("gqa", "mla")


class Model(eqx.Module):
    """A decoder-only transformer, dense or MoE.

    Attention is GQA (MHA when `n_kv_heads == n_heads`) or MLA; sliding-window layers and the
    DeepSeek Sparse Attention indexer are numeric options (0 = off). FFNs are gated (SwiGLU: three
    matrices of hidden × intermediate). The first `n_dense_layers` layers have a dense FFN, the rest MoE.
    """

    name: str = eqx.field(static=True)
    attention: str = eqx.field(static=True)
    n_layers: Array = _num()
    n_dense_layers: Array = _num()
    hidden: Array = _num()
    vocab: Array = _num()
    n_heads: Array = _num()
    n_kv_heads: Array = _num()
    head_dim: Array = _num()
    v_head_dim: Array = _num()
    q_lora_rank: Array = _num(0.0)
    kv_lora_rank: Array = _num(0.0)
    qk_nope_dim: Array = _num(0.0)
    qk_rope_dim: Array = _num(0.0)
    dense_intermediate: Array = _num(0.0)
    n_routed_experts: Array = _num(0.0)
    n_shared_experts: Array = _num(0.0)
    top_k: Array = _num(0.0)
    moe_intermediate: Array = _num(0.0)
    shared_intermediate: Array = _num(0.0)
    sliding_window: Array = _num(0.0)
    sliding_layer_frac: Array = _num(0.0)
    index_n_heads: Array = _num(0.0)
    index_head_dim: Array = _num(0.0)
    index_topk: Array = _num(0.0)
    max_context: Array = _num(131072.0)
    tied_embeddings: Array = _num(0.0)
    n_mtp_layers: Array = _num(0.0)

    def __check_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")

    @property
    def n_moe_layers(self) -> Array:
        return self.n_layers - self.n_dense_layers


class Efficiency(eqx.Module):
    """Shape-dependent kernel efficiencies: the fraction of a roofline rate that real kernels reach.

    Each efficiency is `max_frac × size / (size + half_size)`: it saturates at `max_frac` for large
    shapes and falls for small ones (few GEMM rows, short contexts, few tokens per expert). Fractions
    are clipped to ≤ 1 where used, so a kernel time never falls below the roofline bound.

    Calibration (`jaxsim calibrate`) also fits the fields below whose defaults leave the form above
    unchanged: `*_fp8_scale` / `*_fp4_scale` multiply the compute fraction of FP8 / FP4 operands (their
    peak is higher and kernels reach less of it); `*_latency_s` is the fixed time of one kernel call
    (launch, prologue, the last wave's tail), added to its roofline-limited time, and `*_quant_latency_s`
    the extra fixed time of FP8 / FP4 operands (the kernel that quantises the activations); a positive
    `attn_compute_half_context` lets attention's compute fraction fall for short contexts too;
    `collective_latency_s` is the fixed time of one collective call on top of the link latency terms.
    A kernel's latency and its roofline-limited time overlap as a p-norm `(t^p + latency^p)^(1/p)`
    (`*_latency_p`: 1 = they add, large = the longer hides the other). Decode attention (one query per
    request reading its KV) has parameters of its own (`decode_attn_*`); the spec loader copies the
    `attn_*` values into them when a hardware file does not set them.

    `serving_latency_frac` (in [0, 1]) is the share of every fitted per-call latency (`*_latency_s`,
    `*_quant_latency_s`, `collective_latency_s`) that a kernel still pays inside a serving iteration. The
    calibration fit always prices kernels as measured in isolation (fraction 1); a serving step pays less because
    engines fuse the measured units (norm + quantisation, all-reduce + norm, routing into the MoE kernel) and
    overlap a kernel's prologue with its predecessor's tail (programmatic dependent launch). Scaling a latency
    never takes a kernel under its roofline bound.

    The five form switches (`collective_regimes`, `moe_terms`, `dec_paths`, `ctx_tiles`, `gemm_tiles`) are static
    Python floats, not traced arrays: they choose which kernel forms the traced program contains, so a jitted,
    vmapped or differentiated step carries only the chosen form of each family (change them with
    `calibrate.fit.apply_params` or `dataclasses.replace`, not `eqx.tree_at`).

    `collective_regimes` = 1 (set by calibration) prices collectives inside the scale-up domain with the
    protocol-regime model of `cost.comm` (`coll_*` fields: per-regime latencies, per-peer latencies, fractions of
    the nominal link rate and peer ramps); 0 keeps the single latency + bandwidth form.

    `moe_terms` = 1 (set by calibration) prices the routed experts with `kernels.moe_layer_s`: compute fraction
    ramps in rows per expert and in the expert's width per GPU (per precision: `moe_*half_tokens`,
    `moe_*half_inter`), compute and weight traffic overlapping as a p-norm (`moe_work_p`), a pass over every
    routed row (permutation, activation quantisation, SwiGLU, finalisation: `moe_*row_bytes` per hidden element,
    `moe_row_inter_bytes` per intermediate element), a pass over every token of the instance (routing and top-k:
    `moe_token_bytes` per hidden element, `moe_pair_cost_s` per token-expert pair) and a latency growing with the
    experts held per GPU (`moe_*expert_latency_s`).

    `dec_paths` = 1 (set by calibration) prices decode attention with the kernel-path form of
    `kernels.decode_paths_s` (`dec_*` fields for GQA / MHA, `dec_mla_*` for absorbed MLA); 0 keeps the
    `decode_attn_*` form. Its terms: a launch latency per kernel path plus a split-KV reduction latency that
    rises with the KV read (`*_latency_s`, `*_split_half_context`; paid at `serving_latency_frac` in a serving
    step like every per-call latency); a cost per work item (request × KV head; `*_item_latency_s`, with a
    head-dim exponent `dec_item_head_dim_power` and a cost per tile of 128 KV positions); the KV bytes at a
    fraction of HBM per path (`*_memory_frac`) lowered for short KV rows (`dec_row_bytes_half`, bytes) and for
    few resident blocks (`*_ctas_half`: blocks at half rate; `*_split_chunk`: KV positions per split block;
    `dec_mla_max_splits`: the split count it saturates at); the FLOPs at a fraction of the BF16 peak
    (`*_compute_frac`); the three overlap as a p-norm (`*_overlap_p` ≥ 1). FP8 grouped queries with group ×
    head_dim above `dec_fp8_heavy_group_dim` take a path `1 + dec_fp8_heavy_slowdown` times slower. BF16 KV with a
    sliding window pays up to `dec_bf16_window_latency_s` for the tiles beyond the window (half of it at
    `dec_window_tiles_half` work items × tiles). Defaults: the H200 fit.

    `ctx_tiles` = 1 (set by calibration) prices prefill attention with the tile / occupancy model of
    `kernels.prefill_attention_s` (`ctx_*` fields: compute fractions per precision, softmax cost per score and its
    overlap with the tensor cores, per-CTA and per-KV-tile costs, scheduling exponent and last-wave tail, memory
    fractions, per-call latencies); 0 keeps `kernels.attention_s` with the `attn_*` fields.

    `gemm_tiles` = 1 (set by calibration) prices GEMMs with the tile / wave model of `kernels.tiled_gemm_s`: whole
    CTA tiles per precision spread in waves over `Hardware.sm_count` SMs (`gemm_wave_frac`: 0 perfectly balanced,
    1 whole waves), split-K for BF16 (`gemm_split_k_min`: smallest K slice), a per-tile K prologue (`gemm_*k_prologue`,
    in K elements), an FP8 misaligned-M penalty (`gemm_fp8_misalign_*`, empirical, Hopper), compute at
    `gemm_*tile_compute_frac` of the precision's peak, traffic at a size-dependent fraction of HBM
    (`gemm_*tile_memory_frac` for large transfers, `gemm_small_memory_frac` below about `gemm_memory_size_bytes`),
    the two overlapping as a p-norm (`gemm_tile_work_p`), the activation-quantisation pass at
    `gemm_quant_memory_frac` and a per-call latency per precision (`gemm_*tile_latency_s`); 0 keeps the M-ramp form.
    """

    gemm_compute_frac: Array = _num(0.7)
    gemm_half_rows: Array = _num(64.0)
    gemm_memory_frac: Array = _num(0.7)
    attn_compute_frac: Array = _num(0.6)
    attn_memory_frac: Array = _num(0.85)
    attn_half_context: Array = _num(256.0)
    moe_compute_frac: Array = _num(0.6)
    moe_half_tokens: Array = _num(32.0)
    moe_memory_frac: Array = _num(0.65)
    scale_up_frac: Array = _num(0.7)
    scale_out_frac: Array = _num(0.8)
    layer_overhead_s: Array = _num(20e-6)
    step_overhead_s: Array = _num(500e-6)
    runtime_reserve_frac: Array = _num(0.08)
    gemm_fp8_scale: Array = _num(1.0)
    gemm_fp4_scale: Array = _num(1.0)
    gemm_latency_s: Array = _num(0.0)
    gemm_quant_latency_s: Array = _num(0.0)
    moe_fp8_scale: Array = _num(1.0)
    moe_fp4_scale: Array = _num(1.0)
    moe_latency_s: Array = _num(0.0)
    moe_quant_latency_s: Array = _num(0.0)
    gemm_latency_p: Array = _num(1.0)
    moe_latency_p: Array = _num(1.0)
    attn_fp8_scale: Array = _num(1.0)
    attn_compute_half_context: Array = _num(0.0)
    attn_latency_s: Array = _num(0.0)
    attn_latency_p: Array = _num(1.0)
    decode_attn_compute_frac: Array = _num(0.6)
    decode_attn_memory_frac: Array = _num(0.85)
    decode_attn_half_context: Array = _num(256.0)
    decode_attn_latency_s: Array = _num(0.0)
    collective_latency_s: Array = _num(0.0)
    serving_latency_frac: Array = _num(1.0)
    # Protocol-regime collectives inside the scale-up domain (`cost.comm`; used when `collective_regimes` = 1).
    collective_regimes: float = eqx.field(static=True, default=0.0, converter=float)
    coll_ll_latency_s: Array = _num(4e-6)
    coll_ll_peer_latency_s: Array = _num(1e-6)
    coll_ll_frac: Array = _num(0.017)
    coll_ll128_latency_s: Array = _num(5e-6)
    coll_ll128_frac: Array = _num(0.37)
    coll_simple_latency_s: Array = _num(19e-6)
    coll_simple_peer_latency_s: Array = _num(0.7e-6)
    coll_simple_frac: Array = _num(0.79)
    coll_peer_half: Array = _num(0.5)
    coll_a2a_ll_latency_s: Array = _num(8e-6)
    coll_a2a_ll_frac: Array = _num(0.04)
    coll_a2a_latency_s: Array = _num(13e-6)
    coll_a2a_frac: Array = _num(0.66)
    coll_a2a_peer_half: Array = _num(0.1)
    coll_ar_oneshot_latency_s: Array = _num(2.7e-6)
    coll_ar_oneshot_peer_latency_s: Array = _num(0.08e-6)
    coll_ar_oneshot_frac: Array = _num(0.65)
    coll_ar_twoshot_latency_s: Array = _num(18e-6)
    coll_ar_twoshot_frac: Array = _num(0.65)
    coll_ar_nvls_latency_s: Array = _num(57e-6)
    coll_ar_nvls_frac: Array = _num(0.67)
    # The routed-expert layer as measured (`kernels.moe_layer_s`; used when `moe_terms` = 1).
    moe_terms: float = eqx.field(static=True, default=0.0, converter=float)
    moe_fp8_half_tokens: Array = _num(24.0)
    moe_fp4_half_tokens: Array = _num(130.0)
    moe_half_inter: Array = _num(45.0)
    moe_fp8_half_inter: Array = _num(700.0)
    moe_fp4_half_inter: Array = _num(360.0)
    moe_work_p: Array = _num(2.5)
    moe_row_bytes: Array = _num(11.0)
    moe_fp8_row_bytes: Array = _num(23.0)
    moe_fp4_row_bytes: Array = _num(7.0)
    moe_row_inter_bytes: Array = _num(0.2)
    moe_token_bytes: Array = _num(6.0)
    moe_fp8_token_bytes: Array = _num(6.0)
    moe_fp4_token_bytes: Array = _num(6.0)
    moe_pair_cost_s: Array = _num(8e-11)
    moe_expert_latency_s: Array = _num(0.03e-6)
    moe_fp8_expert_latency_s: Array = _num(0.2e-6)
    moe_fp4_expert_latency_s: Array = _num(0.03e-6)
    # Decode attention by kernel path (`kernels.decode_paths_s`; used when `dec_paths` = 1). GQA / MHA:
    dec_paths: float = eqx.field(static=True, default=0.0, converter=float)
    dec_latency_s: Array = _num(7.823e-06)
    dec_fp8_gqa_latency_s: Array = _num(5.158e-06)
    dec_split_latency_s: Array = _num(6.534e-06)
    dec_split_half_context: Array = _num(2035.0)
    dec_mha_item_latency_s: Array = _num(9.971e-09)
    dec_bf16_gqa_item_latency_s: Array = _num(3.26e-08)
    dec_fp8_gqa_item_latency_s: Array = _num(7.127e-09)
    dec_query_item_latency_s: Array = _num(6.32e-10)
    dec_item_head_dim_power: Array = _num(0.2099)
    dec_tile_item_latency_s: Array = _num(3.947e-11)
    dec_row_bytes_half: Array = _num(15.2)
    dec_bf16_memory_frac: Array = _num(0.8408)
    dec_fp8_mha_memory_frac: Array = _num(0.5669)
    dec_fp8_gqa_memory_frac: Array = _num(0.9996)
    dec_ctas_half: Array = _num(377.2)
    dec_split_chunk: Array = _num(69.53)
    dec_compute_frac: Array = _num(0.125)
    dec_overlap_p: Array = _num(1.772)
    dec_fp8_heavy_group_dim: Array = _num(2621.0)
    dec_fp8_heavy_slowdown: Array = _num(1.02)
    dec_bf16_window_latency_s: Array = _num(1.916e-05)
    dec_window_tiles_half: Array = _num(738.1)
    # ... absorbed MLA:
    dec_mla_latency_s: Array = _num(1.252e-05)
    dec_mla_split_latency_s: Array = _num(5.792e-06)
    dec_mla_split_half_context: Array = _num(881.9)
    dec_mla_item_latency_s: Array = _num(3.297e-08)
    dec_mla_head_item_latency_s: Array = _num(1.435e-09)
    dec_mla_bf16_memory_frac: Array = _num(0.943)
    dec_mla_fp8_memory_frac: Array = _num(0.6672)
    dec_mla_ctas_half: Array = _num(2.06)
    dec_mla_split_chunk: Array = _num(3.06)
    dec_mla_max_splits: Array = _num(7.882)
    dec_mla_bf16_compute_frac: Array = _num(0.8983)
    dec_mla_fp8_compute_frac: Array = _num(0.9297)
    dec_mla_overlap_p: Array = _num(1.698)
    # Tiled prefill attention (`kernels.prefill_attention_s`; used when `ctx_tiles` = 1). Defaults: the H200 fit of
    # experiments/validation/kernels/proto/context_attention.md. SM-seconds are busy time of one SM.
    ctx_tiles: float = eqx.field(static=True, default=0.0, converter=float)
    ctx_compute_frac: Array = _num(0.686)  # tensor fraction of the BF16 peak, BF16 Q/K/V
    ctx_kv8_compute_frac: Array = _num(0.975)  # BF16 math with an FP8 KV cache, of the BF16 peak
    ctx_fp8_compute_frac: Array = _num(0.509)  # FP8 math, of the FP8 peak
    ctx_softmax_s: Array = _num(5.05e-13)  # softmax (exp, max, rescale) per score, GPU-seconds
    ctx_overlap_p: Array = _num(5.26)  # p-norm of a KV tile's tensor-core and softmax times (1 = serial)
    ctx_cta_latency_s: Array = _num(3.79e-6)  # fixed cost of one CTA (prologue, Q load, epilogue), SM-seconds
    ctx_kv_step_s: Array = _num(1.28e-7)  # fixed cost of one KV-tile iteration per 256 head dims, SM-seconds
    ctx_sched_p: Array = _num(7.74)  # p-norm of the balanced waves and the longest CTA (large = max)
    ctx_tail_frac: Array = _num(0.983)  # the last wave's tail, in mean CTA times
    ctx_diag_tiles: Array = _num(0.561)  # extra work of a CTA's masked diagonal tile, in KV tiles
    ctx_memory_frac: Array = _num(0.99)  # HBM fraction for the compulsory bytes (Q, K, V in, O out)
    ctx_pre_memory_frac: Array = _num(0.996)  # HBM fraction of the pre-pass (RoPE, KV-cache write)
    ctx_latency_s: Array = _num(10.1e-6)  # per-call latency, GQA
    ctx_window_extra: Array = _num(534.0)  # KV positions a sliding-window kernel visits beyond the window
    ctx_mla_compute_frac: Array = _num(0.85)  # MLA (expanded K/V): tensor fraction of the BF16 peak, BF16 KV
    ctx_mla_kv8_compute_frac: Array = _num(0.789)  # MLA with an FP8 KV cache, of the BF16 peak
    ctx_mla_cta_latency_s: Array = _num(1.66e-6)  # MLA: fixed cost of one CTA, SM-seconds, BF16 KV
    ctx_mla_kv8_cta_latency_s: Array = _num(3.26e-6)  # MLA: same, FP8 KV
    ctx_mla_latency_s: Array = _num(13.7e-6)  # MLA: per-call latency
    # Tiled GEMMs (`kernels.tiled_gemm_s`; used when `gemm_tiles` = 1). Defaults: the H200 fit of
    # experiments/validation/kernels/proto/gemm.md; the FP4 ones (unused on Hopper) are B200's.
    gemm_tiles: float = eqx.field(static=True, default=0.0, converter=float)
    gemm_tile_compute_frac: Array = _num(0.812)  # of the BF16 peak inside a tile
    gemm_fp8_tile_compute_frac: Array = _num(0.683)  # of the FP8 peak
    gemm_fp4_tile_compute_frac: Array = _num(0.444)  # of the FP4 peak
    gemm_k_prologue: Array = _num(134.0)  # per-tile pipeline fill / epilogue, in K elements, BF16
    gemm_fp8_k_prologue: Array = _num(603.0)
    gemm_fp4_k_prologue: Array = _num(152.0)
    gemm_tile_memory_frac: Array = _num(0.843)  # HBM fraction of large transfers, BF16
    gemm_fp8_tile_memory_frac: Array = _num(0.986)
    gemm_fp4_tile_memory_frac: Array = _num(0.627)
    gemm_small_memory_frac: Array = _num(0.711)  # HBM fraction of transfers well below gemm_memory_size_bytes
    gemm_memory_size_bytes: Array = _num(142e6)  # transfer size over which the fraction moves small -> large
    gemm_tile_work_p: Array = _num(3.65)  # p-norm of compute and traffic time (1 = serial)
    gemm_quant_memory_frac: Array = _num(0.352)  # HBM fraction of the FP8 / FP4 activation-quantisation pass
    gemm_tile_latency_s: Array = _num(2.66e-6)  # per-call latency, BF16
    gemm_fp8_tile_latency_s: Array = _num(3.37e-6)  # FP8, incl. the quantisation kernel's
    gemm_fp4_tile_latency_s: Array = _num(6.71e-6)  # FP4, incl. the quantisation kernel's
    gemm_split_k_min: Array = _num(4000.0)  # BF16 split-K: smallest K slice per split
    gemm_wave_frac: Array = _num(0.323)  # weight of whole waves against perfectly balanced ones
    gemm_fp8_misalign_amp: Array = _num(1.86)  # FP8 compute penalty when M is not a power of two (M > 64)
    gemm_fp8_misalign_rows: Array = _num(643.0)  # ... decaying over this many rows


class Hardware(eqx.Module):
    """One GPU type inside its system: compute, HBM, scale-up domain and scale-out network.

    Bandwidths are per GPU and per direction. A dtype without a native tensor-core path carries the
    rate of the next wider one (FP4 weights on H100 run at the FP8 rate after dequantisation).
    `sm_count` (streaming multiprocessors) sets how many attention tiles run at once in the prefill-attention
    model; it defaults to the H100 / H200 SXM's 132.
    """

    name: str = eqx.field(static=True)
    bf16_flop_per_s: Array = _num()
    fp8_flop_per_s: Array = _num()
    fp4_flop_per_s: Array = _num()
    hbm_bytes: Array = _num()
    hbm_bytes_per_s: Array = _num()
    scale_up_gpus: Array = _num()
    scale_up_bytes_per_s: Array = _num()
    scale_up_latency_s: Array = _num()
    scale_out_bytes_per_s: Array = _num()
    scale_out_latency_s: Array = _num()
    tdp_watts: Array = _num()
    sm_count: Array = _num(132.0)
    eff: Efficiency = eqx.field(default_factory=Efficiency)


BYTES_PER_DTYPE = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5, "nvfp4": 0.5}


class Deployment(eqx.Module):
    """How one serving instance (or one pool of them) is laid out and run.

    Parallelism of one instance: attention runs TP × DP (attention data parallel) per pipeline stage;
    MoE layers run EP × MoE-TP over the same GPUs, so `tp × dp == ep × moe_tp`; the instance has
    `tp × dp × pp` GPUs. Precisions are bytes per element (2 = BF16, 1 = FP8, 0.5 = FP4) so they can
    be swept: GEMM weights of attention / dense FFN / shared experts, routed-expert weights, KV cache,
    attention math. `two_batch_overlap` (0/1) splits the batch in two micro-batches whose compute
    hides the other's EP communication. `nextn` speculative tokens per step (MTP) are each accepted
    with probability `nextn_accept`.
    """

    tp: Array = _num(1.0)
    pp: Array = _num(1.0)
    dp: Array = _num(1.0)
    ep: Array = _num(1.0)
    moe_tp: Array = _num(1.0)
    two_batch_overlap: Array = _num(0.0)
    nextn: Array = _num(0.0)
    nextn_accept: Array = _num(0.0)
    gemm_weight_bytes: Array = _num(2.0)
    moe_weight_bytes: Array = _num(2.0)
    kv_bytes: Array = _num(2.0)
    attn_compute_bytes: Array = _num(2.0)
    activation_bytes: Array = _num(2.0)
    dispatch_bytes: Array = _num(1.0)
    combine_bytes: Array = _num(2.0)
    expert_imbalance: Array = _num(1.2)

    @property
    def gpus(self) -> Array:
        """GPUs of one instance: TP × attention-DP × PP."""
        return self.tp * self.dp * self.pp


class StepBatch(eqx.Module):
    """What one serving iteration processes, per attention-DP rank.

    Args:
        decode_requests: requests generating a token this iteration.
        decode_context: mean KV length (tokens) those requests attend to.
        decode_context_spread: half-width of a uniform spread of their KV lengths around the mean
            (a steady-state batch holds requests at every stage of their output); 0 = all equal.
        prefill_tokens: new prompt tokens processed this iteration (a chunk or whole prompts).
        prefill_context: mean number of KV positions each prefill token attends to (cached prefix +
            earlier chunks + its causal position in this chunk).
        prefill_sequences: how many prompts those prefill tokens belong to (≥ 1 when any).
    """

    decode_requests: Array = _num(0.0)
    decode_context: Array = _num(0.0)
    decode_context_spread: Array = _num(0.0)
    prefill_tokens: Array = _num(0.0)
    prefill_context: Array = _num(0.0)
    prefill_sequences: Array = _num(0.0)


class Workload(eqx.Module):
    """Tokens of one request: cached prefix (KV reused), new input (prefilled), output (decoded)."""

    name: str = eqx.field(static=True, default="custom")
    prefix_tokens: Array = _num(0.0)
    input_tokens: Array = _num(1024.0)
    output_tokens: Array = _num(256.0)


class SLO(eqx.Module):
    """Service-level targets: time to first token and time per output token, seconds."""

    ttft_s: Array = _num(1.0)
    tpot_s: Array = _num(0.05)
