"""An independent float64 NumPy reference of the op costs, compared with the JAX code on random configurations.

The reference below restates the documented formulas (module headers and docstrings of `jaxsim.cost.*`,
DESIGN.md §3) as plain float64 functions of plain numbers; it never calls jaxsim. Random models, deployments,
GPU systems and token counts come from fixed seeds. The JAX side runs eagerly under float64.
The tests are written from the physical formula where it and the code once disagreed (activation widths of
gated FFNs, expanded MLA K/V precision, distinct experts per token, no imbalance on one EP rank).
"""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from jaxsim.cost import comm, kernels
from jaxsim.cost import flops as F
from jaxsim.cost import memory as M
from jaxsim.smooth import HARD, SMOOTH
from jaxsim.spec import Deployment, Efficiency, Hardware, Model
from tests.conftest import x64

RTOL = 1e-9
N_CASES = 20
POW2 = (1, 2, 4, 8, 16)
PRECISIONS = (0.5, 1.0, 2.0)

# =================================================================================================
# Reference (NumPy float64, plain numbers; `m`, `d`, `hw` are namespaces of floats)
# =================================================================================================

INDEX_KEY_BYTES_EXTRA = 4.0  # DSA index key: FP8 elements plus one FP32 scale per token and layer
QUERY_TILE_ROWS = 128.0  # FlashAttention re-reads a sequence's KV once per tile of query rows
MIN_FRAC = 1e-6  # efficiencies are clipped into [1e-6, 1]


def ref_dsa_on(m) -> bool:
    return m.index_topk > 0


def ref_indexer_weights(m) -> float:
    """Lightning indexer: q_lora (or hidden) → heads × dim queries, hidden → one key, hidden → head weights."""
    if not ref_dsa_on(m):
        return 0.0
    q_in = m.q_lora_rank if m.q_lora_rank > 0 else m.hidden
    return q_in * m.index_n_heads * m.index_head_dim + m.hidden * m.index_head_dim + m.hidden * m.index_n_heads


def ref_attention_weights_gpu(m, tp: float) -> tuple[float, float]:
    """(elements applied to every token, MLA kv_b elements) of one layer on one of `tp` ranks."""
    indexer = ref_indexer_weights(m)  # replicated
    if m.attention == "gqa":
        per_rank_kv_heads = max(m.n_kv_heads / tp, 1.0)  # KV heads replicate when TP exceeds them
        w_q = m.hidden * (m.n_heads / tp) * m.head_dim
        w_o = (m.n_heads / tp) * m.v_head_dim * m.hidden
        w_k = m.hidden * per_rank_kv_heads * m.head_dim
        w_v = m.hidden * per_rank_kv_heads * m.v_head_dim
        return w_q + w_k + w_v + w_o + indexer, 0.0
    q_head = m.qk_nope_dim + m.qk_rope_dim
    if m.q_lora_rank > 0:
        q_replicated = m.hidden * m.q_lora_rank  # q_a
        q_sharded = m.q_lora_rank * m.n_heads * q_head  # q_b
    else:
        q_replicated = 0.0
        q_sharded = m.hidden * m.n_heads * q_head
    kv_a = m.hidden * (m.kv_lora_rank + m.qk_rope_dim)  # latent + shared RoPE key, replicated
    w_o = m.n_heads * m.v_head_dim * m.hidden
    kv_b = m.kv_lora_rank * m.n_heads * (m.qk_nope_dim + m.v_head_dim)
    return q_replicated + kv_a + indexer + (q_sharded + w_o) / tp, kv_b / tp


def ref_gated_ffn_weights(hidden: float, intermediate: float) -> float:
    return 3.0 * hidden * intermediate  # gate, up (hidden × inter) and down (inter × hidden)


def ref_params(m, experts_per_token: float, tables: float) -> float:
    main, kv_b = ref_attention_weights_gpu(m, 1.0)
    moe_layer = (experts_per_token * ref_gated_ffn_weights(m.hidden, m.moe_intermediate)
                 + m.n_shared_experts * ref_gated_ffn_weights(m.hidden, m.shared_intermediate)
                 + m.hidden * m.n_routed_experts)  # router
    return (m.n_layers * (main + kv_b)
            + m.n_dense_layers * ref_gated_ffn_weights(m.hidden, m.dense_intermediate)
            + (m.n_layers - m.n_dense_layers) * moe_layer
            + tables * m.vocab * m.hidden)


def ref_total_params(m) -> float:
    return ref_params(m, m.n_routed_experts, 1.0 if m.tied_embeddings else 2.0)


def ref_active_params(m) -> float:
    return ref_params(m, m.top_k, 1.0)  # the LM head multiplies; the embedding is a lookup


def ref_kv_elems_layer(m) -> float:
    if m.attention == "mla":
        return m.kv_lora_rank + m.qk_rope_dim  # one latent + one RoPE key shared by all heads
    return m.n_kv_heads * (m.head_dim + m.v_head_dim)


def ref_kv_elems_layer_rank(m, tp: float) -> float:
    if m.attention == "mla":
        return ref_kv_elems_layer(m)  # every TP rank holds the whole latent
    return max(m.n_kv_heads / tp, 1.0) * (m.head_dim + m.v_head_dim)


def ref_index_bytes_layer(m) -> float:
    return m.index_head_dim + INDEX_KEY_BYTES_EXTRA if ref_dsa_on(m) else 0.0


def ref_kv_bytes_per_token(m, kv_bytes: float) -> float:
    return m.n_layers * (ref_kv_elems_layer(m) * kv_bytes + ref_index_bytes_layer(m))


def ref_effective_context(m, context: float) -> float:
    if m.sliding_window <= 0:
        return context
    f = m.sliding_layer_frac
    return f * min(context, m.sliding_window) + (1.0 - f) * context


def ref_sparse_context(m, context: float) -> float:
    ctx = ref_effective_context(m, context)
    return min(ctx, m.index_topk) if ref_dsa_on(m) else ctx


def ref_indexer_scoring(m, q_tokens: float, sequences: float, context: float) -> tuple[float, float]:
    if not ref_dsa_on(m):
        return 0.0, 0.0
    flops = 2.0 * q_tokens * context * m.index_n_heads * m.index_head_dim
    return flops, sequences * context * ref_index_bytes_layer(m)


def ref_head_dims(m, latent: bool) -> tuple[float, float]:
    """(query-key dim, value dim) per head of core attention."""
    if m.attention == "gqa":
        return m.head_dim, m.v_head_dim
    if latent:
        return m.kv_lora_rank + m.qk_rope_dim, m.kv_lora_rank
    return m.qk_nope_dim + m.qk_rope_dim, m.v_head_dim


def ref_decode_attention(m, d, requests: float, context: float) -> tuple[float, float]:
    q_tokens = requests * (1.0 + d.nextn)
    n = ref_sparse_context(m, context)
    dqk, dv = ref_head_dims(m, latent=True)
    flops = q_tokens * n * (m.n_heads / d.tp) * (2.0 * dqk + 2.0 * dv)  # QKᵀ and PV
    kv = requests * n * ref_kv_elems_layer_rank(m, d.tp) * d.kv_bytes  # each request's KV read once
    idx_f, idx_b = ref_indexer_scoring(m, q_tokens, requests, context)
    return flops + idx_f, kv + idx_b


def ref_mean_limited(prefix: float, s: float, limit: float) -> float:
    """(1/s)·Σ_{i=1..s} min(prefix + i, limit), by cases: below the limit throughout, at it throughout, or
    crossing it (the terms up to the limit, then limit for the rest)."""
    if prefix + s <= limit:
        return prefix + (s + 1.0) / 2.0
    if prefix >= limit:
        return limit
    return ((limit - prefix) * (limit + prefix + 1.0) / 2.0 + (prefix + s - limit) * limit) / s


def ref_prefill_read(m, tokens: float, context: float, sequences: float) -> float:
    """Mean KV positions a prefill token reads: per sequence of s new tokens after prefix = context − (s + 1)/2,
    the exact mean under a sliding window / DSA top-k, applied as a correction to `context` and kept within
    [0, min(context, limit)]."""
    if tokens <= 0 or sequences <= 0:
        return context
    s = tokens / sequences
    prefix = max(context - (s + 1.0) / 2.0, 0.0)
    inf = math.inf
    topk = m.index_topk if ref_dsa_on(m) else inf
    window = m.sliding_window if m.sliding_window > 0 else inf

    def read(limit: float) -> float:
        naive = prefix + (s + 1.0) / 2.0
        return min(max(context - (naive - ref_mean_limited(prefix, s, limit)), 0.0), context, limit)

    f = m.sliding_layer_frac
    return f * read(min(window, topk)) + (1.0 - f) * read(topk)


def ref_prefill_attention(m, d, tokens: float, context: float, sequences: float,
                          absorbed: bool) -> tuple[float, float]:
    n = ref_prefill_read(m, tokens, context, sequences)
    heads = m.n_heads / d.tp
    dqk, dv = ref_head_dims(m, latent=absorbed)
    flops = tokens * n * heads * (2.0 * dqk + 2.0 * dv)
    if m.attention == "mla" and not absorbed:
        # Expanded per-head K/V come out of the kv_b GEMM in compute precision, not from the cache.
        kv_per_position = heads * (dqk + dv) * d.attn_compute_bytes
    else:
        kv_per_position = ref_kv_elems_layer_rank(m, d.tp) * d.kv_bytes
    tiles = max(tokens / QUERY_TILE_ROWS, sequences)  # ≥ one tile per sequence
    idx_f, idx_b = ref_indexer_scoring(m, tokens, sequences, context)
    return flops + idx_f, tiles * n * kv_per_position + idx_b


def ref_dense_ffn(m, d, tokens: float, intermediate: float) -> tuple[float, float]:
    i = intermediate / d.tp
    w = ref_gated_ffn_weights(m.hidden, intermediate) / d.tp
    # gate-up GEMM: hidden in, 2·i out; down GEMM: i in, hidden out (the SwiGLU itself is elementwise).
    act = tokens * ((m.hidden + 2.0 * i) + (i + m.hidden))
    return 2.0 * tokens * w, w * d.gemm_weight_bytes + act * d.activation_bytes


def ref_router(m, d, tokens: float) -> tuple[float, float]:
    w = m.hidden * m.n_routed_experts
    return 2.0 * tokens * w, (w + tokens * (m.hidden + m.n_routed_experts)) * d.activation_bytes


def ref_expert_load(m, d, instance_tokens: float) -> tuple[float, float, float]:
    """(assignments, touched experts, rows per expert) on the busiest EP rank, per the docstring."""
    if m.n_routed_experts == 0:
        return 0.0, 0.0, 0.0
    E = m.n_routed_experts
    picks = instance_tokens * m.top_k
    imbalance = d.expert_imbalance if d.ep > 1 else 1.0  # one rank cannot be imbalanced
    busiest = imbalance * picks / d.ep
    # Each token picks top_k distinct experts: an expert is missed by one token with prob. 1 − k/E.
    touched = E * (1.0 - (1.0 - min(m.top_k / E, 1.0 - 1e-6)) ** instance_tokens)
    active = min(max(imbalance * touched / d.ep, min(busiest, 1.0)), E / d.ep)
    return busiest, active, (busiest / active if active > 0 else 0.0)


def ref_routed_experts(m, d, tokens: float, active: float) -> tuple[float, float]:
    i = m.moe_intermediate / d.moe_tp
    w = ref_gated_ffn_weights(m.hidden, m.moe_intermediate) / d.moe_tp
    act = tokens * ((m.hidden + 2.0 * i) + (i + m.hidden))
    return 2.0 * tokens * w, active * w * d.moe_weight_bytes + act * d.activation_bytes


def ref_lm_head(m, d, rows: float) -> tuple[float, float]:
    w = m.hidden * m.vocab / d.tp
    return 2.0 * rows * w, (w + rows * (m.hidden + m.vocab / d.tp)) * d.activation_bytes


# ---- kernels ----


def ref_peak(hw, operand_bytes: float) -> float:
    if operand_bytes <= 0.5:
        return hw.fp4_flop_per_s
    if operand_bytes <= 1.0:
        return hw.fp8_flop_per_s
    return hw.bf16_flop_per_s


def ref_clip_frac(f: float) -> float:
    return min(max(f, MIN_FRAC), 1.0)


def ref_saturating(max_frac: float, size: float, half: float) -> float:
    size = max(size, 0.0)
    return ref_clip_frac(max_frac * size / (size + half))


def ref_kernel(flops, bytes_, peak, bw, compute_frac, memory_frac) -> float:
    return max(flops / (peak * ref_clip_frac(compute_frac)), bytes_ / (bw * ref_clip_frac(memory_frac)))


def ref_gemm_s(hw, flops, bytes_, rows, operand_bytes, inner: float = 0.0) -> float:
    e = hw.eff
    gemm = ref_kernel(flops, bytes_, ref_peak(hw, operand_bytes), hw.hbm_bytes_per_s,
                      ref_saturating(e.gemm_compute_frac, rows, e.gemm_half_rows), e.gemm_memory_frac)
    # FP8 / FP4 operands: a quantisation pass before the GEMM reads rows × inner BF16 values, writes them narrower.
    quant = rows * inner * (2.0 + operand_bytes) if operand_bytes < 2.0 else 0.0
    return gemm + quant / (hw.hbm_bytes_per_s * ref_clip_frac(e.gemm_memory_frac))


def ref_grouped_gemm_s(hw, flops, bytes_, rows_per_expert, operand_bytes) -> float:
    e = hw.eff
    return ref_kernel(flops, bytes_, ref_peak(hw, operand_bytes), hw.hbm_bytes_per_s,
                      ref_saturating(e.moe_compute_frac, rows_per_expert, e.moe_half_tokens), e.moe_memory_frac)


def ref_attention_s(hw, flops, bytes_, context, compute_bytes) -> float:
    e = hw.eff
    return ref_kernel(flops, bytes_, ref_peak(hw, compute_bytes), hw.hbm_bytes_per_s, e.attn_compute_frac,
                      ref_saturating(e.attn_memory_frac, context, e.attn_half_context))


# ---- collectives ----


def ref_link(hw, n: float) -> tuple[float, float]:
    if n <= hw.scale_up_gpus:
        return hw.scale_up_bytes_per_s * hw.eff.scale_up_frac, hw.scale_up_latency_s
    return hw.scale_out_bytes_per_s * hw.eff.scale_out_frac, hw.scale_out_latency_s


def ref_all_reduce_s(hw, buffer_bytes: float, n: float) -> float:
    bw, lat = ref_link(hw, n)
    return 2.0 * (n - 1.0) / n * buffer_bytes / bw + 2.0 * math.log2(n) * lat  # ring traffic, tree latency


def ref_all_gather_s(hw, buffer_bytes: float, n: float) -> float:
    bw, lat = ref_link(hw, n)
    return (n - 1.0) / n * buffer_bytes / bw + math.log2(n) * lat


def ref_all_to_all_s(hw, send_bytes: float, n: float) -> float:
    if n <= 1.0:
        return 0.0
    in_domain = min(n, hw.scale_up_gpus)  # the sender's domain, itself included
    nvlink = send_bytes * (in_domain - 1.0) / n / (hw.scale_up_bytes_per_s * hw.eff.scale_up_frac)
    nic = send_bytes * (n - in_domain) / n / (hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)
    lat = hw.scale_out_latency_s if n > hw.scale_up_gpus else hw.scale_up_latency_s
    return max(nvlink, nic) + lat


def ref_p2p_s(hw, bytes_: float, same_domain: bool) -> float:
    if same_domain:
        return hw.scale_up_latency_s + bytes_ / (hw.scale_up_bytes_per_s * hw.eff.scale_up_frac)
    return hw.scale_out_latency_s + bytes_ / (hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)


# ---- memory ----


def ref_moe_layer_weight_bytes_gpu(m, d) -> float:
    routed = m.n_routed_experts / d.ep * ref_gated_ffn_weights(m.hidden, m.moe_intermediate) / d.moe_tp
    shared = m.n_shared_experts * ref_gated_ffn_weights(m.hidden, m.shared_intermediate) / d.tp
    router = m.hidden * m.n_routed_experts
    return routed * d.moe_weight_bytes + shared * d.gemm_weight_bytes + router * d.activation_bytes


def ref_weight_bytes_per_gpu(m, d) -> float:
    main, kv_b = ref_attention_weights_gpu(m, d.tp)
    attn_layer = (main + kv_b) * d.gemm_weight_bytes
    dense_layer = ref_gated_ffn_weights(m.hidden, m.dense_intermediate) / d.tp * d.gemm_weight_bytes
    moe_layer = ref_moe_layer_weight_bytes_gpu(m, d)
    stage = (m.n_layers * attn_layer + m.n_dense_layers * dense_layer
             + (m.n_layers - m.n_dense_layers) * moe_layer) / d.pp
    # Without PP one GPU holds embedding and LM head (one matrix if tied); with PP the last stage the head.
    n_tables = 1.0 if (d.pp > 1 or m.tied_embeddings) else 2.0
    tables = n_tables * m.vocab * m.hidden / d.tp * d.activation_bytes
    mtp = m.n_mtp_layers * (attn_layer + moe_layer) if d.nextn > 0 else 0.0
    return stage + tables + mtp


def ref_kv_bytes_per_token_gpu(m, d) -> float:
    per_layer = ref_kv_elems_layer_rank(m, d.tp) * d.kv_bytes + ref_index_bytes_layer(m)
    return m.n_layers / d.pp * per_layer


# =================================================================================================
# Random configurations (plain dicts of floats) and their JAX specs
# =================================================================================================


def _loguniform(rng, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _count(rng, hi: float, integer: bool = True) -> float:
    """0, 1, or log-uniform up to `hi` (large values included)."""
    u = rng.uniform()
    if u < 0.15:
        return 0.0
    if u < 0.25:
        return 1.0
    x = _loguniform(rng, 1.0, hi)
    return float(round(x)) if integer else x


def _pick(rng, options) -> float:
    return float(options[int(rng.integers(len(options)))])


def random_model(rng, attention: str) -> dict:
    n_layers = float(rng.integers(2, 101))
    p = dict(attention=attention, n_layers=n_layers, hidden=128.0 * rng.integers(4, 65),
             vocab=float(rng.integers(32_000, 160_001)), max_context=131072.0,
             tied_embeddings=_pick(rng, (0, 1)), n_mtp_layers=_pick(rng, (0, 1)))
    if attention == "gqa":
        kv = _pick(rng, (1, 2, 4, 8, 16, 32))
        group = _pick(rng, [g for g in (1, 2, 4, 8, 16, 32, 64) if 16 <= kv * g <= 128])
        head_dim = _pick(rng, (64, 128, 256))
        p |= dict(n_heads=kv * group, n_kv_heads=kv, head_dim=head_dim,
                  v_head_dim=head_dim if rng.uniform() < 0.7 else _pick(rng, (64, 128)))
    else:
        heads = _pick(rng, (16, 32, 64, 128))
        nope, rope = _pick(rng, (64, 128)), _pick(rng, (32, 64))
        p |= dict(n_heads=heads, n_kv_heads=heads, head_dim=nope + rope, v_head_dim=_pick(rng, (64, 128)),
                  q_lora_rank=_pick(rng, (0, 768, 1536)), kv_lora_rank=_pick(rng, (256, 512)),
                  qk_nope_dim=nope, qk_rope_dim=rope)
    experts = 0.0 if rng.uniform() < 0.25 else float(rng.integers(8, 513))
    if experts == 0:
        p |= dict(n_dense_layers=n_layers, dense_intermediate=128.0 * rng.integers(8, 225))
    else:
        shared = _pick(rng, (0, 1, 2))
        moe_inter = 128.0 * rng.integers(2, 33)
        n_dense = float(rng.integers(0, min(4, int(n_layers))))
        p |= dict(n_dense_layers=n_dense, dense_intermediate=128.0 * rng.integers(8, 225) if n_dense else 0.0,
                  n_routed_experts=experts, top_k=float(rng.integers(1, min(16, experts) + 1)),
                  n_shared_experts=shared, moe_intermediate=moe_inter, shared_intermediate=moe_inter * (shared > 0))
    if rng.uniform() < 0.4:
        p |= dict(sliding_window=_pick(rng, (128, 512, 4096)), sliding_layer_frac=_pick(rng, (0.5, 0.75, 1.0)))
    if rng.uniform() < 0.4:
        p |= dict(index_n_heads=_pick(rng, (32, 64)), index_head_dim=_pick(rng, (64, 128)),
                  index_topk=_pick(rng, (512, 1024, 2048)))
    return p


def random_deployment(rng) -> dict:
    tp, dp, pp = _pick(rng, POW2), _pick(rng, POW2), _pick(rng, POW2)
    moe_tp = _pick(rng, [x for x in POW2 if (tp * dp) % x == 0])
    return dict(tp=tp, dp=dp, pp=pp, moe_tp=moe_tp, ep=tp * dp / moe_tp,  # tp·dp == ep·moe_tp
                two_batch_overlap=_pick(rng, (0, 1)), nextn=_pick(rng, (0, 0, 1, 2, 3)),
                nextn_accept=float(rng.uniform(0.5, 0.9)),
                **{k: _pick(rng, PRECISIONS) for k in ("gemm_weight_bytes", "moe_weight_bytes", "kv_bytes",
                                                       "attn_compute_bytes", "activation_bytes",
                                                       "dispatch_bytes", "combine_bytes")},
                expert_imbalance=float(rng.uniform(1.0, 1.5)))


def random_hardware(rng, max_frac: float = 1.2) -> dict:
    """Realistic rates; efficiency fractions up to `max_frac` so that the clip to ≤ 1 is exercised."""
    bf16 = _loguniform(rng, 3e14, 2.5e15)
    fp8 = bf16 * _pick(rng, (1, 2))
    up = _loguniform(rng, 1e11, 1e12)
    eff = dict(gemm_compute_frac=rng.uniform(0.2, max_frac), gemm_half_rows=_loguniform(rng, 4, 512),
               gemm_memory_frac=rng.uniform(0.2, max_frac), attn_compute_frac=rng.uniform(0.2, max_frac),
               attn_memory_frac=rng.uniform(0.2, max_frac), attn_half_context=_loguniform(rng, 16, 4096),
               moe_compute_frac=rng.uniform(0.2, max_frac), moe_half_tokens=_loguniform(rng, 2, 512),
               moe_memory_frac=rng.uniform(0.2, max_frac), scale_up_frac=rng.uniform(0.3, 1.0),
               scale_out_frac=rng.uniform(0.3, 1.0), layer_overhead_s=_loguniform(rng, 1e-6, 1e-4),
               step_overhead_s=_loguniform(rng, 1e-5, 1e-3), runtime_reserve_frac=rng.uniform(0.0, 0.2))
    return dict(bf16_flop_per_s=bf16, fp8_flop_per_s=fp8, fp4_flop_per_s=fp8 * _pick(rng, (1, 2)),
                hbm_bytes=_loguniform(rng, 40e9, 200e9), hbm_bytes_per_s=_loguniform(rng, 1.5e12, 8e12),
                scale_up_gpus=_pick(rng, (4, 8, 16, 72)), scale_up_bytes_per_s=up,
                scale_up_latency_s=_loguniform(rng, 1e-6, 1e-5), scale_out_bytes_per_s=up * rng.uniform(0.03, 0.5),
                scale_out_latency_s=_loguniform(rng, 3e-6, 3e-5), tdp_watts=_loguniform(rng, 300, 1200),
                eff={k: float(v) for k, v in eff.items()})


def random_tokens(rng) -> dict:
    prefill = _count(rng, 1e6)
    return dict(decode_requests=_count(rng, 1e4), decode_context=_count(rng, 1e6, integer=False),
                prefill_tokens=prefill, prefill_context=_count(rng, 1e6, integer=False),
                prefill_sequences=float(rng.integers(1, min(prefill, 64) + 1)) if prefill else 0.0,
                instance_tokens=_count(rng, 1e6), rows=_count(rng, 1e5))


def make_case(i: int) -> dict:
    rng = np.random.default_rng(20_250 + i)
    case = dict(i=i, m=random_model(rng, ("gqa", "mla")[i % 2]), d=random_deployment(rng),
                hw=random_hardware(rng), t=random_tokens(rng))
    if i % 7 == 3:  # an idle rank: every token count 0
        case["t"] = dict.fromkeys(case["t"], 0.0)
    return case


CASES = [make_case(i) for i in range(N_CASES)]


def ns(p: dict) -> NS:
    """Reference view: attributes, model fields that were not drawn default to 0."""
    defaults = dict(q_lora_rank=0.0, kv_lora_rank=0.0, qk_nope_dim=0.0, qk_rope_dim=0.0, dense_intermediate=0.0,
                    n_routed_experts=0.0, n_shared_experts=0.0, top_k=0.0, moe_intermediate=0.0,
                    shared_intermediate=0.0, sliding_window=0.0, sliding_layer_frac=0.0, index_n_heads=0.0,
                    index_head_dim=0.0, index_topk=0.0) if "attention" in p else {}
    out = {k: (ns(v) if isinstance(v, dict) else v) for k, v in (defaults | p).items()}
    return NS(**out)


def jmodel(p: dict) -> Model:
    return Model(name="random", **p)


def jdeploy(p: dict) -> Deployment:
    return Deployment(**p)


def jhardware(p: dict) -> Hardware:
    return Hardware(name="random", **{k: v for k, v in p.items() if k != "eff"}, eff=Efficiency(**p["eff"]))


def close(actual, expected, what: str) -> None:
    a = np.asarray(actual)
    assert a.dtype == np.float64, f"{what}: the JAX side ran in {a.dtype}, not float64"
    np.testing.assert_allclose(a, expected, rtol=RTOL, atol=0.0, err_msg=what)


@pytest.fixture(autouse=True)
def _float64():
    with x64():
        yield


# =================================================================================================
# Tests
# =================================================================================================


def test_random_cases_cover_the_branches():
    """The seeds must reach every code path the comparisons are meant to check."""
    ms = [ns(c["m"]) for c in CASES]
    ds = [ns(c["d"]) for c in CASES]
    assert {m.attention for m in ms} == {"gqa", "mla"}
    assert any(m.sliding_window > 0 for m in ms) and any(m.index_topk > 0 for m in ms)
    assert any(m.n_routed_experts == 0 for m in ms) and any(m.n_routed_experts > 0 for m in ms)
    assert any(m.attention == "mla" and m.q_lora_rank == 0 for m in ms)
    assert any(m.attention == "gqa" and d.tp > m.n_kv_heads for m, d in zip(ms, ds, strict=True))
    assert any(d.pp > 1 for d in ds) and any(d.nextn > 0 for d in ds) and any(d.ep == 1 for d in ds)
    for key in ("decode_requests", "prefill_tokens", "decode_context"):
        values = [c["t"][key] for c in CASES]
        assert min(values) == 0.0 and max(values) > 1e3, key


def test_reference_reproduces_published_deepseek_v3_sizes():
    """Anchor the reference itself: DeepSeek-V3 has 671B weights (MTP excluded), 37B active, and
    (512 + 64) × 61 = 35,136 KV elements per token."""
    m = ns(dict(attention="mla", n_layers=61, n_dense_layers=3, hidden=7168, vocab=129280, n_heads=128,
                n_kv_heads=128, head_dim=192, v_head_dim=128, q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128,
                qk_rope_dim=64, dense_intermediate=18432, n_routed_experts=256, n_shared_experts=1, top_k=8,
                moe_intermediate=2048, shared_intermediate=2048, tied_embeddings=0))
    assert abs(ref_total_params(m) / 671e9 - 1) < 0.002
    assert abs(ref_active_params(m) / 37e9 - 1) < 0.015
    assert ref_kv_bytes_per_token(m, 1.0) == 35_136.0


def test_param_counts():
    for c in CASES:
        m, jm = ns(c["m"]), jmodel(c["m"])
        close(F.total_params(jm), ref_total_params(m), f"case {c['i']} total_params")
        close(F.active_params(jm), ref_active_params(m), f"case {c['i']} active_params")
        assert ref_active_params(m) <= ref_total_params(m)


def test_attention_weights_gpu():
    for c in CASES:
        m, jm = ns(c["m"]), jmodel(c["m"])
        for tp in (*POW2, 32.0, 128.0):  # beyond the KV heads: GQA K/V replicate
            main, kv_b = F.attention_weights_gpu(jm, tp)
            ref_main, ref_kv_b = ref_attention_weights_gpu(m, tp)
            close(main, ref_main, f"case {c['i']} tp {tp} attention weights")
            close(kv_b, ref_kv_b, f"case {c['i']} tp {tp} kv_b")


def test_kv_bytes_per_token_and_context_windows():
    for c in CASES:
        m, jm = ns(c["m"]), jmodel(c["m"])
        for kvb in PRECISIONS:
            close(F.kv_bytes_per_token(jm, kvb), ref_kv_bytes_per_token(m, kvb), f"case {c['i']} kv bytes/token")
        for ctx in (0.0, 1.0, 100.0, 128.0, 700.5, 2048.0, 5000.0, 1e6):
            close(F.effective_context(jm, ctx), ref_effective_context(m, ctx), f"case {c['i']} ctx {ctx} effective")
            close(F.sparse_context(jm, ctx), ref_sparse_context(m, ctx), f"case {c['i']} ctx {ctx} sparse")


def test_decode_attention_and_indexer():
    for c in CASES:
        m, d, t = ns(c["m"]), ns(c["d"]), c["t"]
        jm, jd = jmodel(c["m"]), jdeploy(c["d"])
        for req, ctx in ((t["decode_requests"], t["decode_context"]), (0.0, 1e5), (64.0, 0.0), (1.0, 3e5)):
            got = F.decode_attention(jm, jd, req, ctx)
            ref = ref_decode_attention(m, d, req, ctx)
            close(got.flops, ref[0], f"case {c['i']} decode_attention flops ({req}, {ctx})")
            close(got.bytes, ref[1], f"case {c['i']} decode_attention bytes ({req}, {ctx})")
            idx = F.indexer_scoring(jm, req * 2.0, req, ctx)
            ref_idx = ref_indexer_scoring(m, req * 2.0, req, ctx)
            close(idx.flops, ref_idx[0], f"case {c['i']} indexer flops")
            close(idx.bytes, ref_idx[1], f"case {c['i']} indexer bytes")


def test_prefill_attention():
    """GQA and absorbed MLA fully; expanded MLA with KV, compute and activation precision equal (the
    disputed precision of the expanded K/V is tested apart below)."""
    for c in CASES:
        t = c["t"]
        p_same = c["d"] | dict(kv_bytes=c["d"]["attn_compute_bytes"], activation_bytes=c["d"]["attn_compute_bytes"])
        m, jm = ns(c["m"]), jmodel(c["m"])
        inputs = ((t["prefill_tokens"], t["prefill_context"], t["prefill_sequences"]), (0.0, 0.0, 0.0),
                  (8192.0, 4096.0, 1.0), (100.0, 2e5, 3.0))
        for absorbed in (False, True):
            p = p_same if (m.attention == "mla" and not absorbed) else c["d"]
            d, jd = ns(p), jdeploy(p)
            for tokens, ctx, seqs in inputs:
                got = F.prefill_attention(jm, jd, tokens, ctx, seqs, absorbed)
                ref = ref_prefill_attention(m, d, tokens, ctx, seqs, absorbed)
                what = f"case {c['i']} prefill_attention absorbed={absorbed} ({tokens}, {ctx}, {seqs})"
                close(got.flops, ref[0], what + " flops")
                close(got.bytes, ref[1], what + " bytes")


def test_attention_projections_flops_and_weight_bytes():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        main, kv_b = ref_attention_weights_gpu(m, d.tp)
        tokens, expanded = c["t"]["prefill_tokens"], c["t"]["prefill_tokens"] * 7.0
        got = F.attention_projections(jm, jd, tokens, expanded)
        close(got.flops, 2.0 * tokens * main + 2.0 * expanded * kv_b, f"case {c['i']} projections flops")
        close(F.attention_projections(jm, jd, 0.0, 0.0).bytes, (main + kv_b) * d.gemm_weight_bytes,
              f"case {c['i']} projection weight bytes")


def test_dense_ffn_flops_and_weight_bytes():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        for inter in (m.dense_intermediate, m.n_shared_experts * m.shared_intermediate, 18432.0):
            for tokens in (0.0, 1.0, c["t"]["prefill_tokens"], 1e6):
                ref = ref_dense_ffn(m, d, tokens, inter)
                close(F.dense_ffn(jm, jd, tokens, inter).flops, ref[0], f"case {c['i']} dense_ffn flops")
            close(F.dense_ffn(jm, jd, 0.0, inter).bytes, ref_dense_ffn(m, d, 0.0, inter)[1],
                  f"case {c['i']} dense_ffn weight bytes")


def test_router_and_lm_head():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        for n in (0.0, 1.0, c["t"]["rows"], c["t"]["prefill_tokens"]):
            for name, got, ref in (("router", F.router(jm, jd, n), ref_router(m, d, n)),
                                   ("lm_head", F.lm_head(jm, jd, n), ref_lm_head(m, d, n))):
                close(got.flops, ref[0], f"case {c['i']} {name} flops rows {n}")
                close(got.bytes, ref[1], f"case {c['i']} {name} bytes rows {n}")


def test_expert_load_and_routed_experts():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        for tokens in (0.0, 1.0, 3.0, c["t"]["instance_tokens"], 1e6):
            load = F.expert_load(jm, jd, tokens)
            busiest, active, rows = ref_expert_load(m, d, tokens)
            what = f"case {c['i']} expert_load tokens {tokens}"
            close(load.tokens, busiest, what + " assignments")
            close(load.active_experts, active, what + " active experts")
            close(load.rows_per_expert, rows, what + " rows per expert")
            routed = F.routed_experts(jm, jd, load)
            close(routed.flops, ref_routed_experts(m, d, busiest, active)[0], what + " routed flops")
            # Weight reads alone (no assignments): the touched experts' weights, 1/moe_tp of each.
            weights_only = F.routed_experts(jm, jd, F.ExpertLoad(0.0 * load.tokens, load.active_experts, 0.0))
            close(weights_only.bytes, ref_routed_experts(m, d, 0.0, active)[1], what + " routed weight bytes")


def _kernel_inputs(rng, n: int) -> list[tuple[float, float, float, float]]:
    return [(_count(rng, 1e16, integer=False), _count(rng, 1e12, integer=False), _count(rng, 1e5),
             _pick(rng, (0.5, 1.0, 2.0, 4.0))) for _ in range(n)]


def test_kernel_times():
    rng = np.random.default_rng(7)
    for c in CASES:
        hw, jhw = ns(c["hw"]), jhardware(c["hw"])
        for flops, bytes_, size, ob in _kernel_inputs(rng, 12):
            what = f"case {c['i']} ({flops:.3g} FLOP, {bytes_:.3g} B, size {size}, {ob} B/elem)"
            close(kernels.peak_flop_per_s(jhw, ob), ref_peak(hw, ob), what + " peak")
            close(kernels.roofline_s(flops, bytes_, ref_peak(hw, ob), hw.hbm_bytes_per_s),
                  max(flops / ref_peak(hw, ob), bytes_ / hw.hbm_bytes_per_s), what + " roofline_s")
            close(kernels.gemm_s(jhw, flops, bytes_, size, ob), ref_gemm_s(hw, flops, bytes_, size, ob),
                  what + " gemm_s")
            inner = float(rng.choice((128.0, 7168.0)))
            close(kernels.gemm_s(jhw, flops, bytes_, size, ob, inner=inner),
                  ref_gemm_s(hw, flops, bytes_, size, ob, inner), what + f" gemm_s (inner {inner})")
            close(kernels.grouped_gemm_s(jhw, flops, bytes_, size / 7.0, ob),
                  ref_grouped_gemm_s(hw, flops, bytes_, size / 7.0, ob), what + " grouped_gemm_s")
            close(kernels.attention_s(jhw, flops, bytes_, size * 3.0, ob),
                  ref_attention_s(hw, flops, bytes_, size * 3.0, ob), what + " attention_s")
            close(kernels.memory_bound_s(jhw, bytes_),
                  bytes_ / (hw.hbm_bytes_per_s * ref_clip_frac(hw.eff.gemm_memory_frac)), what + " memory_bound_s")


@pytest.mark.parametrize("mode", [HARD, SMOOTH], ids=["hard", "smooth"])
def test_kernel_time_never_below_roofline(mode):
    """DESIGN §3: a prediction may never fall under max(flops / peak, bytes / bw), whatever the
    efficiency parameters (fractions above 1 included)."""
    rng = np.random.default_rng(11)
    for i in range(N_CASES):
        p = random_hardware(rng, max_frac=1.6)
        hw, jhw = ns(p), jhardware(p)
        for flops, bytes_, size, ob in _kernel_inputs(rng, 10):
            bound = max(flops / ref_peak(hw, ob), bytes_ / hw.hbm_bytes_per_s)
            times = {"gemm_s": kernels.gemm_s(jhw, flops, bytes_, size, ob, mode, inner=size),
                     "grouped_gemm_s": kernels.grouped_gemm_s(jhw, flops, bytes_, size, ob, mode),
                     "attention_s": kernels.attention_s(jhw, flops, bytes_, size, ob, mode),
                     "memory_bound_s": kernels.memory_bound_s(jhw, bytes_)}
            if mode is HARD:
                times["roofline_s"] = kernels.roofline_s(flops, bytes_, ref_peak(hw, ob), hw.hbm_bytes_per_s)
            for name, t in times.items():
                t = float(t)
                lower = bytes_ / hw.hbm_bytes_per_s if name == "memory_bound_s" else bound
                assert t >= lower * (1.0 - 1e-12), f"hw {i} {name}: {t} s under the roofline bound {lower} s"


GROUP_SIZES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 72.0, 128.0, 256.0)


def test_collectives_inside_and_across_scale_up_domains():
    rng = np.random.default_rng(3)
    for c in CASES:
        hw, jhw = ns(c["hw"]), jhardware(c["hw"])
        for n in GROUP_SIZES:
            b = _count(rng, 1e10, integer=False)
            what = f"case {c['i']} n {n} (scale-up {hw.scale_up_gpus}) {b:.3g} B"
            close(comm.all_reduce_s(jhw, b, n), ref_all_reduce_s(hw, b, n), what + " all_reduce_s")
            close(comm.all_gather_s(jhw, b, n), ref_all_gather_s(hw, b, n), what + " all_gather_s")
            close(comm.reduce_scatter_s(jhw, b, n), ref_all_gather_s(hw, b, n), what + " reduce_scatter_s")
            close(comm.all_to_all_s(jhw, b, n), ref_all_to_all_s(hw, b, n), what + " all_to_all_s")
            for same in (True, False):
                close(comm.p2p_s(jhw, b, 1.0 if same else 0.0), ref_p2p_s(hw, b, same), what + f" p2p same={same}")
        for fn in (comm.all_reduce_s, comm.all_gather_s, comm.all_to_all_s):
            assert float(fn(jhw, 1e9, 1.0)) == 0.0, f"{fn.__name__} of one GPU must cost nothing"


def test_memory_per_gpu():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        close(M.weight_bytes_per_gpu(jm, jd), ref_weight_bytes_per_gpu(m, d), f"case {c['i']} weight bytes/GPU")
        close(M.kv_bytes_per_token_gpu(jm, jd), ref_kv_bytes_per_token_gpu(m, d), f"case {c['i']} KV bytes/token/GPU")
        ctx = c["t"]["decode_context"]
        close(M.kv_bytes_per_request_gpu(jm, jd, ctx), ref_kv_bytes_per_token_gpu(m, d) * ref_effective_context(m, ctx),
              f"case {c['i']} KV bytes/request/GPU")
        # Unsharded (tp = pp = 1) the per-GPU KV equals the whole model's.
        single = c["d"] | dict(tp=1.0, pp=1.0)
        close(M.kv_bytes_per_token_gpu(jm, jdeploy(single)), ref_kv_bytes_per_token(m, d.kv_bytes),
              f"case {c['i']} KV bytes/token at tp = pp = 1")


# =================================================================================================
# Discrepancies between the code and the documented / physical formula (see module docstring)
# =================================================================================================


def test_dense_ffn_activation_bytes():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        tokens = 4096.0
        close(F.dense_ffn(jm, jd, tokens, m.dense_intermediate + 1024.0).bytes,
              ref_dense_ffn(m, d, tokens, m.dense_intermediate + 1024.0)[1], f"case {c['i']} dense_ffn bytes")


def test_routed_experts_activation_bytes():
    for c in CASES:
        m, d, jm, jd = ns(c["m"]), ns(c["d"]), jmodel(c["m"]), jdeploy(c["d"])
        if m.n_routed_experts == 0:
            continue
        load = F.expert_load(jm, jd, 4096.0)
        close(F.routed_experts(jm, jd, load).bytes,
              ref_routed_experts(m, d, float(load.tokens), float(load.active_experts))[1],
              f"case {c['i']} routed_experts bytes")


def test_prefill_expanded_mla_reads_kv_in_compute_precision():
    for c in CASES:
        if c["m"]["attention"] != "mla":
            continue
        # Compute and activation precision agree (either fix passes); the cache is FP8.
        p = c["d"] | dict(kv_bytes=1.0, attn_compute_bytes=2.0, activation_bytes=2.0)
        m, d, jm, jd = ns(c["m"]), ns(p), jmodel(c["m"]), jdeploy(p)
        got = F.prefill_attention(jm, jd, 8192.0, 4096.0, 2.0, absorbed=False)
        close(got.bytes, ref_prefill_attention(m, d, 8192.0, 4096.0, 2.0, absorbed=False)[1],
              f"case {c['i']} expanded-MLA prefill bytes")


def test_busiest_expert_rank_never_exceeds_all_assignments():
    for c in CASES:
        if c["m"].get("top_k", 0.0) == 0:
            continue
        for ep in POW2:
            p = c["d"] | dict(ep=ep, moe_tp=c["d"]["tp"] * c["d"]["dp"] / ep)
            load = F.expert_load(jmodel(c["m"]), jdeploy(p), 1000.0)
            assert float(load.tokens) <= 1000.0 * c["m"]["top_k"] * (1 + 1e-12), f"case {c['i']} ep {ep}"


def test_one_token_touches_exactly_top_k_experts():
    for c in CASES:
        if c["m"].get("n_routed_experts", 0.0) == 0:
            continue
        p = c["d"] | dict(ep=1.0, moe_tp=c["d"]["tp"] * c["d"]["dp"], expert_imbalance=1.0)
        load = F.expert_load(jmodel(c["m"]), jdeploy(p), 1.0)
        close(load.active_experts, c["m"]["top_k"], f"case {c['i']} active experts of one token")
        close(load.rows_per_expert, 1.0, f"case {c['i']} rows per expert of one token")
