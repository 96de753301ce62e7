"""FLOPs and bytes of every op of a layer, for one GPU, one configuration at a time.

Conventions: a multiply-add is 2 FLOP; a GEMM of M tokens through a K × N weight costs 2·M·K·N FLOP
and reads K·N weight elements plus M·(K + N) activation elements. Ops return `(flops, bytes)` for the
GPU that does the most work in its group; the step model turns them into time with `kernels`.

Parameter counts (`*_params`) are for the whole model and back `total_params` / `active_params`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim.spec import Deployment, Model

# FlashAttention-style kernels re-read the KV of a sequence once per tile of this many query rows.
PREFILL_QUERY_TILE = 128.0
# DSA indexer keys are cached in FP8 with one FP32 scale per token and layer.
INDEX_KEY_SCALE_BYTES = 4.0


class OpCost(NamedTuple):
    """FLOPs and HBM bytes of one op on one GPU."""

    flops: Array
    bytes: Array


# --------------------------------------------------------------------------------------------------
# Parameter counts (whole model)
# --------------------------------------------------------------------------------------------------


def mla_param_parts(m: Model) -> tuple[Array, Array, Array]:
    """MLA weights of one layer, split as (replicated under TP, head-sharded except kv_b, kv_b).

    Replicated: q down-projection (or none), kv down-projection with the RoPE key.
    Sharded by heads: q up-projection, output projection. `kv_b` (latent → per-head K_nope and V) is
    returned apart because decode absorbs it into the query / output side.
    """
    qk = m.qk_nope_dim + m.qk_rope_dim
    q_down = m.hidden * m.q_lora_rank
    q_up = jnp.where(m.q_lora_rank > 0, m.q_lora_rank, m.hidden) * m.n_heads * qk
    kv_down = m.hidden * (m.kv_lora_rank + m.qk_rope_dim)
    kv_b = m.kv_lora_rank * m.n_heads * (m.qk_nope_dim + m.v_head_dim)
    out = m.n_heads * m.v_head_dim * m.hidden
    return q_down + kv_down, q_up + out, kv_b


def indexer_params(m: Model) -> Array:
    """DSA lightning-indexer weights of one layer: query up-projection, key projection, head weights."""
    q_in = jnp.where(m.q_lora_rank > 0, m.q_lora_rank, m.hidden)
    on = jnp.where(m.index_topk > 0, 1.0, 0.0)
    return on * (q_in * m.index_n_heads * m.index_head_dim + m.hidden * m.index_head_dim + m.hidden * m.index_n_heads)


def attention_weights_gpu(m: Model, tp: ArrayLike) -> tuple[Array, Array]:
    """Attention weights (elements) on one of `tp` ranks, as (applied to every token, MLA's kv_b).

    GQA: Q and O split by heads, K and V by KV heads (replicated, one per rank at least, when TP
    exceeds them). MLA: down-projections replicated, the rest split by heads; kv_b apart because
    prefill applies it to every context position and absorbed decode to the query tokens only.
    The DSA indexer's weights are replicated.
    """
    idx = indexer_params(m)
    if m.attention == "mla":
        rep, shard, kv_b = mla_param_parts(m)
        return rep + idx + shard / tp, kv_b / tp
    kv_heads = jnp.maximum(m.n_kv_heads / tp, 1.0)
    q_o = m.hidden * m.n_heads / tp * (m.head_dim + m.v_head_dim)
    kv = m.hidden * kv_heads * (m.head_dim + m.v_head_dim)
    return q_o + kv + idx, jnp.zeros_like(q_o)


def attention_gemm_shapes(m: Model, tp: ArrayLike) -> tuple[tuple[Array, Array], ...]:
    """(N, K) of the GEMMs that apply `attention_weights_gpu`'s first part on one of `tp` ranks; their N·K add up
    to it. GQA: fused QKV (K = hidden), O. MLA: the fused down-projections with the indexer's key and head-weight
    projections (K = hidden; also Q's when there is no Q latent), the Q up-projection with the indexer's (K = the Q
    latent; N = 0 without it), O. A GQA model's indexer weights (if any) are left to the shares of `kernels.gemm_s`.
    """
    heads = m.n_heads / tp
    if m.attention == "mla":
        on = jnp.where(m.index_topk > 0, 1.0, 0.0)
        q = heads * (m.qk_nope_dim + m.qk_rope_dim) + on * m.index_n_heads * m.index_head_dim
        latent = m.q_lora_rank > 0
        down = (jnp.where(latent, m.q_lora_rank, q) + m.kv_lora_rank + m.qk_rope_dim
                + on * (m.index_head_dim + m.index_n_heads))
        return ((down, m.hidden), (jnp.where(latent, q, 0.0), m.q_lora_rank), (m.hidden, heads * m.v_head_dim))
    kv_heads = jnp.maximum(m.n_kv_heads / tp, 1.0)
    qkv = heads * m.head_dim + kv_heads * (m.head_dim + m.v_head_dim)
    return ((qkv, m.hidden), (m.hidden, heads * m.v_head_dim))


def kv_b_gemm_shape(m: Model, tp: ArrayLike) -> tuple[Array, Array]:
    """(N, K) of MLA's kv_b on one of `tp` ranks (latent → per-head K_nope and V). Absorbed decode runs it as
    per-head batched GEMMs on the query side; it is priced as this one GEMM of the same weights."""
    return m.n_heads / tp * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank


def ffn_gemm_shapes(m: Model, d: Deployment, intermediate: ArrayLike) -> tuple[tuple[Array, Array], ...]:
    """(N, K) of a TP-sharded gated FFN's GEMMs: fused gate / up (K = hidden), down."""
    inter = jnp.asarray(intermediate) / d.tp
    return ((2.0 * inter, m.hidden), (m.hidden, inter))


def attention_params(m: Model) -> Array:
    """Attention weights of one layer (projections, incl. the DSA indexer)."""
    main, kv_b = attention_weights_gpu(m, 1.0)
    return main + kv_b


def ffn_params(hidden: ArrayLike, intermediate: ArrayLike) -> Array:
    """Gated (SwiGLU) FFN: gate, up and down matrices."""
    return 3.0 * jnp.asarray(hidden) * intermediate


def embedding_params(m: Model) -> Array:
    """Input embedding plus LM head (one matrix when tied)."""
    return m.vocab * m.hidden * (2.0 - m.tied_embeddings)


def total_params(m: Model) -> Array:
    """All weights of the model, MTP modules excluded (the convention of published sizes)."""
    attn = m.n_layers * attention_params(m)
    dense = m.n_dense_layers * ffn_params(m.hidden, m.dense_intermediate)
    moe_layer = (
        m.n_routed_experts * ffn_params(m.hidden, m.moe_intermediate)
        + m.n_shared_experts * ffn_params(m.hidden, m.shared_intermediate)
        + m.hidden * m.n_routed_experts
    )
    return attn + dense + m.n_moe_layers * moe_layer + embedding_params(m)


def active_params(m: Model) -> Array:
    """Weights a token multiplies through: all attention, dense FFNs, top-k + shared experts, router,
    LM head. The input embedding is a lookup, not a matmul, so it is not counted."""
    attn = m.n_layers * attention_params(m)
    dense = m.n_dense_layers * ffn_params(m.hidden, m.dense_intermediate)
    moe_layer = (
        m.top_k * ffn_params(m.hidden, m.moe_intermediate)
        + m.n_shared_experts * ffn_params(m.hidden, m.shared_intermediate)
        + m.hidden * m.n_routed_experts
    )
    return attn + dense + m.n_moe_layers * moe_layer + m.vocab * m.hidden


# --------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------


def kv_elems_per_token_layer(m: Model) -> Array:
    """KV-cache elements one token stores in one layer (whole model, before TP sharding)."""
    if m.attention == "mla":
        return m.kv_lora_rank + m.qk_rope_dim
    return m.n_kv_heads * (m.head_dim + m.v_head_dim)


def index_bytes_per_token_layer(m: Model) -> Array:
    """DSA indexer key cache per token and layer: FP8 key plus its FP32 scale (0 without DSA)."""
    return jnp.where(m.index_topk > 0, m.index_head_dim + INDEX_KEY_SCALE_BYTES, 0.0)


def kv_bytes_per_token(m: Model, kv_bytes: ArrayLike) -> Array:
    """KV bytes one token of context holds across all layers (whole model, no window truncation)."""
    return m.n_layers * (kv_elems_per_token_layer(m) * kv_bytes + index_bytes_per_token_layer(m))


def kv_layer_share(m: Model, d: Deployment) -> Array:
    """Share of one layer's KV of a request that one GPU of its attention TP group holds.

    MLA's latent is shared by all heads, so every TP rank holds all of it. GQA KV heads split over
    TP; when TP exceeds the KV heads they are replicated (one head per rank at least).
    """
    if m.attention == "mla":
        return jnp.ones_like(d.tp)
    return jnp.maximum(m.n_kv_heads / d.tp, 1.0) / m.n_kv_heads


_NO_LIMIT = 1e30


def mean_min_uniform(context: ArrayLike, spread: ArrayLike, limit: ArrayLike) -> Array:
    """E[min(c, limit)] for c uniform on [context − spread, context + spread] (spread ≥ 0).

    With a = context − spread, L = 2·spread and u = clip(limit − a, 0, L) the mean is
    min(limit, a) + u − u² / (2L); at spread = 0 it is min(context, limit).
    """
    context, spread = jnp.asarray(context), jnp.asarray(spread)
    wide = spread > 0
    span = jnp.where(wide, 2.0 * spread, 1.0)  # double-where: no 0/0 in values or gradients
    lo = context - spread
    u = jnp.clip(limit - lo, 0.0, span)
    spread_mean = jnp.minimum(limit, lo) + u - u * u / (2.0 * span)
    return jnp.where(wide, spread_mean, jnp.minimum(context, limit))


def effective_context(m: Model, context: ArrayLike, spread: ArrayLike = 0.0) -> Array:
    """Mean KV positions a query reads per layer: sliding-window layers read at most the window.

    `spread` is the half-width of a uniform spread of contexts around `context` (a decode batch whose
    requests are at all stages of their output); the window truncation is averaged over it exactly.
    """
    window = jnp.where(m.sliding_window > 0, m.sliding_window, _NO_LIMIT)
    windowed = mean_min_uniform(context, spread, window)
    return m.sliding_layer_frac * windowed + (1.0 - m.sliding_layer_frac) * jnp.asarray(context)


def window_excess(prefix: ArrayLike, length: ArrayLike, limit: ArrayLike) -> Array:
    """Σ_{i=1..length} max(prefix + i − limit, 0): the KV positions a limit of `limit` per query (a sliding
    window or DSA's top-k) cuts off the causal attention of `length` new tokens after `prefix` cached ones.

    Closed form, without cancellation: with k = clip(prefix + length − limit, 0, length) queries over the limit and
    o = max(prefix − limit, 0) the excess of the first of them, the sum is k·o + k(k + 1)/2 (exact for whole
    numbers, linear in between); 0 when the limit is never reached.
    """
    prefix, length = jnp.asarray(prefix), jnp.asarray(length)
    k = jnp.clip(prefix + length - limit, 0.0, length)
    o = jnp.maximum(prefix - limit, 0.0)
    return k * o + 0.5 * k * (k + 1.0)


def prefill_read_positions(m: Model, tokens: ArrayLike, context: ArrayLike, sequences: ArrayLike) -> Array:
    """Mean KV positions core attention reads per prefill token: `context` (all positions before it, causal),
    less what a sliding window (on `sliding_layer_frac` of the layers) or DSA's top-k cuts off.

    Exact per sequence of s = tokens / sequences new tokens after p = context − (s + 1)/2 cached ones:
    (1/s)·Σ_{i=1..s} min(p + i, limit) = context − window_excess(p, s, limit) / s, kept within [0, min(context,
    limit)]. (min(context, limit) alone over-counts a window shorter than the chunk: s = 16384, w = 8192 reads
    6144 positions per token on average, not 8192.)
    """
    context = jnp.asarray(context)
    s = jnp.maximum(jnp.asarray(tokens), 0.0)
    has = (s > 0) & (jnp.asarray(sequences) > 0)
    s_safe = jnp.where(has, s / jnp.where(has, sequences, 1.0), 1.0)  # double-where: no 0/0
    prefix = jnp.maximum(context - 0.5 * (s_safe + 1.0), 0.0)
    window = jnp.where(m.sliding_window > 0, m.sliding_window, _NO_LIMIT)
    topk = jnp.where(m.index_topk > 0, m.index_topk, _NO_LIMIT)

    def read(limit: Array) -> Array:
        cut = jnp.where(has, window_excess(prefix, s_safe, limit) / s_safe, 0.0)
        return jnp.clip(context - cut, 0.0, jnp.minimum(context, limit))

    return m.sliding_layer_frac * read(jnp.minimum(window, topk)) + (1.0 - m.sliding_layer_frac) * read(topk)


def sparse_context(m: Model, context: ArrayLike, spread: ArrayLike = 0.0) -> Array:
    """KV positions core attention reads: all of them (window-truncated), or DSA's top-k selection."""
    window = jnp.where(m.sliding_window > 0, m.sliding_window, _NO_LIMIT)
    topk = jnp.where(m.index_topk > 0, m.index_topk, _NO_LIMIT)
    windowed = mean_min_uniform(context, spread, jnp.minimum(window, topk))
    full = mean_min_uniform(context, spread, topk)
    return m.sliding_layer_frac * windowed + (1.0 - m.sliding_layer_frac) * full


# --------------------------------------------------------------------------------------------------
# Per-layer ops on one GPU
# --------------------------------------------------------------------------------------------------


def _gemm(tokens: ArrayLike, weight_elems: ArrayLike, k: ArrayLike, n: ArrayLike, weight_bytes: ArrayLike,
          act_bytes: ArrayLike) -> OpCost:
    """GEMM of `tokens` rows through `weight_elems` weights with total input width k, output width n."""
    flops = 2.0 * tokens * weight_elems
    return OpCost(flops, weight_elems * weight_bytes + tokens * (k + n) * act_bytes)


def attention_projections(m: Model, d: Deployment, tokens: ArrayLike, expanded_tokens: ArrayLike) -> OpCost:
    """Q/K/V/O projections (and the DSA indexer's) for `tokens` rows on one attention-TP rank.

    MLA's `kv_b` runs on `expanded_tokens` rows: prefill expands the latent of every context position
    it reads; absorbed decode applies it to the query tokens instead (`expanded_tokens = tokens`).
    """
    wb, ab = d.gemm_weight_bytes, d.activation_bytes
    main_w, kv_b_w = attention_weights_gpu(m, d.tp)
    main = _gemm(tokens, main_w, 2.0 * m.hidden, m.hidden, wb, ab)
    up = _gemm(expanded_tokens, kv_b_w, m.kv_lora_rank, m.n_heads / d.tp * (m.qk_nope_dim + m.v_head_dim), wb, ab)
    return OpCost(main.flops + up.flops, main.bytes + up.bytes)


def decode_attention(m: Model, d: Deployment, requests: ArrayLike, context: ArrayLike,
                     spread: ArrayLike = 0.0) -> OpCost:
    """Core attention of decode: each request's `1 + nextn` query tokens read its KV once (memory-bound).

    MLA decode is the absorbed path: queries live in the latent space (kv_lora + rope for scores,
    kv_lora for values), every TP rank reads the whole latent. DSA: core attention reads top-k positions
    and the indexer scores all of them.
    """
    q_tokens = requests * (1.0 + d.nextn)
    read = sparse_context(m, context, spread)
    heads = m.n_heads / d.tp
    if m.attention == "mla":
        dqk, dv = m.kv_lora_rank + m.qk_rope_dim, m.kv_lora_rank
    else:
        dqk, dv = m.head_dim, m.v_head_dim
    flops = 2.0 * q_tokens * read * heads * (dqk + dv)
    kv_read = requests * read * kv_elems_per_token_layer(m) * kv_layer_share(m, d) * d.kv_bytes
    idx = indexer_scoring(m, q_tokens, requests, context)
    return OpCost(flops + idx.flops, kv_read + idx.bytes)


def indexer_scoring(m: Model, q_tokens: ArrayLike, sequences: ArrayLike, context: ArrayLike) -> OpCost:
    """DSA lightning indexer: every query token scores every earlier position (FP8), 0 without DSA."""
    on = jnp.where(m.index_topk > 0, 1.0, 0.0)
    flops = 2.0 * q_tokens * context * m.index_n_heads * m.index_head_dim
    reads = sequences * context * index_bytes_per_token_layer(m)
    return OpCost(on * flops, on * reads)


def prefill_attention(m: Model, d: Deployment, tokens: ArrayLike, context: ArrayLike,
                      sequences: ArrayLike, absorbed: bool) -> OpCost:
    """Core attention of `tokens` prefill queries, each attending `context` positions on average.

    MLA has two paths: `absorbed=False` expands the latent to per-head K/V (head dims nope+rope / v),
    `absorbed=True` attends in the latent space like decode (larger dims, no expansion). KV is re-read
    once per query tile of 128 rows. Sliding windows and DSA's top-k limit each query's positions exactly
    (`prefill_read_positions`).
    """
    read = prefill_read_positions(m, tokens, context, sequences)
    heads = m.n_heads / d.tp
    if m.attention == "mla":
        if absorbed:
            dqk, dv = m.kv_lora_rank + m.qk_rope_dim, m.kv_lora_rank
            kv_elems = kv_elems_per_token_layer(m)
        else:
            dqk, dv = m.qk_nope_dim + m.qk_rope_dim, m.v_head_dim
            kv_elems = heads * (dqk + dv)
    else:
        dqk, dv = m.head_dim, m.v_head_dim
        kv_elems = jnp.maximum(m.n_kv_heads / d.tp, 1.0) * (dqk + dv)
    flops = 2.0 * tokens * read * heads * (dqk + dv)
    # The cache is read at its own precision; MLA's expanded K/V come out of kv_b in compute precision.
    elem_bytes = d.attn_compute_bytes if (m.attention == "mla" and not absorbed) else d.kv_bytes
    tiles = jnp.maximum(tokens / PREFILL_QUERY_TILE, sequences)
    kv_read = tiles * read * kv_elems * elem_bytes
    idx = indexer_scoring(m, tokens, sequences, context)
    return OpCost(flops + idx.flops, kv_read + idx.bytes)


def prefill_kv_positions(tokens: ArrayLike, context: ArrayLike, sequences: ArrayLike) -> Array:
    """Distinct KV positions a prefill chunk touches: each sequence's context up to the chunk's end."""
    return sequences * context + 0.5 * tokens


def dense_ffn(m: Model, d: Deployment, tokens: ArrayLike, intermediate: ArrayLike) -> OpCost:
    """A gated FFN of width `intermediate`, TP-sharded (dense layers and shared experts)."""
    w = ffn_params(m.hidden, intermediate) / d.tp
    # gate/up read hidden and write 2·inter/tp; down reads inter/tp and writes hidden.
    return _gemm(tokens, w, m.hidden + intermediate / d.tp, m.hidden + 2.0 * intermediate / d.tp,
                 d.gemm_weight_bytes, d.activation_bytes)


def router(m: Model, d: Deployment, tokens: ArrayLike) -> OpCost:
    """The MoE gate: tokens × hidden × experts, weights kept in activation precision."""
    return _gemm(tokens, m.hidden * m.n_routed_experts, m.hidden, m.n_routed_experts, d.activation_bytes,
                 d.activation_bytes)


class ExpertLoad(NamedTuple):
    """How routed-expert work lands on the busiest GPU of an EP group."""

    tokens: Array  # token-expert assignments the GPU computes
    active_experts: Array  # distinct experts whose weights it reads
    rows_per_expert: Array  # M of each expert's GEMM


def expert_load(m: Model, d: Deployment, instance_tokens: ArrayLike) -> ExpertLoad:
    """Assignments and touched experts on the busiest EP rank for `instance_tokens` tokens.

    Each token picks `top_k` distinct experts of `E`; with EP > 1 the busiest rank gets
    `expert_imbalance ×` the mean share (one rank has nobody to be imbalanced against). The expected
    number of distinct experts hit by n tokens is E·(1 − (1 − k/E)^n): at small batch only a few
    experts' weights are read.
    """
    experts = jnp.maximum(m.n_routed_experts, 2.0)  # finite for dense models (0 MoE layers anyway)
    pick = jnp.clip(m.top_k / experts, 0.0, 1.0 - 1e-6)
    imbalance = jnp.where(d.ep > 1, d.expert_imbalance, 1.0)
    assignments = instance_tokens * m.top_k
    per_gpu = imbalance * assignments / d.ep
    local_experts = experts / d.ep
    touched = experts * -jnp.expm1(instance_tokens * jnp.log1p(-pick))
    active = jnp.clip(touched / d.ep * imbalance, jnp.minimum(per_gpu, 1.0), local_experts)
    rows = per_gpu / jnp.maximum(active, 1e-6)
    return ExpertLoad(per_gpu, active, rows)


def routed_experts(m: Model, d: Deployment, load: ExpertLoad) -> OpCost:
    """Routed experts as a grouped GEMM on one GPU: weights of the touched experts, 1/moe_tp of each."""
    w_expert = ffn_params(m.hidden, m.moe_intermediate) / d.moe_tp
    flops = 2.0 * load.tokens * w_expert
    # Per assignment: gate/up read hidden and write 2·inter/moe_tp, down reads inter/moe_tp and writes hidden.
    width = 2.0 * m.hidden + 3.0 * m.moe_intermediate / d.moe_tp
    bytes_ = load.active_experts * w_expert * d.moe_weight_bytes + load.tokens * width * d.activation_bytes
    return OpCost(flops, bytes_)


def lm_head(m: Model, d: Deployment, rows: ArrayLike) -> OpCost:
    """Logits for `rows` positions (decode tokens and each prompt's last), vocab split over TP."""
    return _gemm(rows, m.hidden * m.vocab / d.tp, m.hidden, m.vocab / d.tp, d.activation_bytes,
                 d.activation_bytes)


def lm_head_gemm_shape(m: Model, d: Deployment) -> tuple[tuple[Array, Array]]:
    """(N, K) of the LM head's one GEMM on a TP rank."""
    return ((m.vocab / d.tp, m.hidden),)


def elementwise_bytes(m: Model, d: Deployment, tokens: ArrayLike) -> Array:
    """Norms, RoPE, residual adds and activations of one layer: a few passes over the hidden state."""
    return 8.0 * tokens * m.hidden * d.activation_bytes
