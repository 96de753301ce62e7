"""One serving iteration: composes the op costs of `cost/` into a time and a named breakdown.

The iteration runs, on every attention-DP rank in lockstep, `decode_requests` decode requests
(each with `1 + nextn` query tokens) plus `prefill_tokens` prompt tokens. Identical layers are costed
once and multiplied by their count. Per layer:

- attention: projections (GEMM), core attention of decode (`decode_attention_s`) and prefill
  (`prefill_core_attention_s`: the tile model kernels.prefill_attention_s when `ctx_tiles` = 1, else
  kernels.attention_s), TP all-reduce of the output;
- FFN: a dense FFN (dense layers) or, for MoE layers, router + shared experts + routed experts as a
  grouped GEMM over the whole instance's tokens, with EP dispatch before and combine after
  (all-to-all over EP, all-gather / reduce-scatter over MoE-TP), and a TP all-reduce;
- elementwise ops (norms, RoPE, residuals) and a fixed per-layer launch overhead.

Two-batch overlap splits the batch into two micro-batches: each op is costed at half the tokens and
the EP communication of one hides behind the compute of the other, per layer max(compute, comm).
PP: each stage holds `n_layers / pp` layers; one iteration's latency crosses every stage, and with
`pp` batches in flight a new iteration completes every `interval_s`.
MTP / speculative decoding: each of the `nextn` draft steps costs one more (MoE) layer and LM head on
the decode tokens (the draft module is one transformer block).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.batching import DEFAULT_BLOCK, blocked_vmap
from jaxsim.cost import comm
from jaxsim.cost import flops as F
from jaxsim.cost import kernels as K
from jaxsim.cost import memory as Mem
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Deployment, Hardware, Model, StepBatch

BREAKDOWN = ("attention_s", "gemm_s", "moe_s", "dispatch_s", "combine_s", "tp_comm_s", "pp_comm_s", "other_s")


class StepCost(eqx.Module):
    """Time and memory of one iteration on the most loaded GPU of an instance.

    `total_s` is the iteration's latency (all PP stages); `interval_s` the time between completions
    of successive iterations when PP keeps `pp` iterations in flight (= total_s without PP).
    The breakdown fields add up to `total_s + hidden_s`, where `hidden_s` is communication hidden
    by two-batch overlap.
    """

    total_s: Array
    interval_s: Array
    attention_s: Array  # core attention incl. the DSA indexer
    gemm_s: Array  # attention projections, dense FFN, shared experts, router, LM head
    moe_s: Array  # routed experts
    dispatch_s: Array
    combine_s: Array
    tp_comm_s: Array
    pp_comm_s: Array
    other_s: Array  # elementwise ops, launch and step overheads
    hidden_s: Array
    flops: Array  # FLOP per GPU in this iteration
    weight_bytes: Array
    kv_bytes: Array
    activation_bytes: Array
    memory_bytes: Array  # weights + KV + activations on the most loaded GPU
    decode_tokens_per_request: Array  # tokens a decode request gains per iteration (1 + accepted drafts)
    valid: Array  # 1.0 when the parallelism is realisable for this model, else 0.0


def _divides(d: Array, x: Array) -> Array:
    """d divides x (floats holding whole numbers); cheaper than a float remainder when vectorised."""
    q = x / d
    return q == jnp.floor(q)


def valid_parallelism(m: Model, d: Deployment) -> Array:
    """1.0 when degrees are ≥ 1, `tp × dp == ep × moe_tp` (MoE models), TP divides the heads, EP the experts and
    PP does not exceed the layers; else 0.0 (traced; `presets.check_deployment` explains why)."""
    ok = (d.tp >= 1) & (d.pp >= 1) & (d.dp >= 1) & (d.ep >= 1) & (d.moe_tp >= 1)
    ok = ok & ((m.n_routed_experts == 0) | (jnp.abs(d.tp * d.dp - d.ep * d.moe_tp) < 0.5))
    ok = ok & _divides(d.tp, m.n_heads)
    ok = ok & ((m.n_routed_experts == 0) | _divides(d.ep, m.n_routed_experts))
    ok = ok & (d.pp <= m.n_layers) & (d.nextn >= 0) & (d.nextn_accept >= 0) & (d.nextn_accept <= 1)
    return ok.astype(d.tp.dtype)


def decode_attention_s(m: Model, hw: Hardware, d: Deployment, requests: ArrayLike, context: ArrayLike,
                       spread: ArrayLike = 0.0, mode: Mode = HARD) -> tuple[Array, F.OpCost]:
    """(time s, FLOPs and bytes) of one layer's decode core attention on one GPU: `requests` decode requests of
    `1 + nextn` query tokens each reading a KV of mean length `context` (± `spread`).

    With `dec_paths` = 1 the kernel-path form (`kernels.decode_paths_s`) prices the sliding-window layers (reading at
    most the window) and the full layers apart, weighted by `sliding_layer_frac`; with 0 the `decode_attn_*` form
    prices the layer-mean FLOPs and bytes. The FLOPs and bytes returned are the layer mean either way.
    """
    op = F.decode_attention(m, d, requests, context, spread)
    legacy = K.decode_attention_s(hw, op.flops, op.bytes, context, d.attn_compute_bytes, mode)
    mla = m.attention == "mla"
    heads = m.n_heads / d.tp
    kv_heads = jnp.ones_like(heads) if mla else jnp.maximum(m.n_kv_heads / d.tp, 1.0)

    def with_share(windowed: float) -> Model:
        return eqx.tree_at(lambda x: x.sliding_layer_frac, m, jnp.full_like(m.sliding_layer_frac, windowed))

    full = F.sparse_context(with_share(0.0), context, spread)  # positions before the window

    def layers(mk: Model) -> Array:
        cost = F.decode_attention(mk, d, requests, context, spread)
        shape = K.DecodeShape(requests, F.sparse_context(mk, context, spread), full, heads, kv_heads, m.head_dim,
                              d.kv_bytes, 1.0 + d.nextn, mla)
        return K.decode_paths_s(hw, cost.flops, cost.bytes, shape)

    share = m.sliding_layer_frac
    paths = share * layers(with_share(1.0)) + (1.0 - share) * layers(with_share(0.0))
    return (paths if hw.eff.dec_paths > 0.5 else legacy), op


def prefill_core_attention_s(m: Model, hw: Hardware, d: Deployment, tokens: ArrayLike, context: ArrayLike,
                             sequences: ArrayLike, absorbed: bool, mode: Mode = HARD,
                             bound: bool = False) -> tuple[Array, Array]:
    """(time s, FLOPs) of the core attention of `tokens` prefill tokens from `sequences` prompts, each token
    attending `context` positions on average (cached prefix + earlier chunks + its causal position), on one GPU.

    `ctx_tiles` = 1 prices it with the tile model `kernels.prefill_attention_s`: s = tokens / sequences new tokens
    per prompt after a prefix of context − (s + 1)/2 positions; sliding-window layers (a `sliding_layer_frac`
    share) and full layers are priced apart and mixed by that share; DSA's top-k acts as a window, its indexer
    is a kernel of its own at the FP8 compute and memory fractions of the tile model. MLA: the expanded path
    (`absorbed=False`) with its per-head dims and one K/V per head; the absorbed path attends in the latent
    space (dims kv_lora + rope / kv_lora, one shared latent). `ctx_tiles` = 0 keeps `kernels.attention_s` on the
    FLOPs and bytes of `flops.prefill_attention`. FLOPs are those of `flops.prefill_attention` either way.
    `bound=True` gives the roofline bound of the same work instead (the tile model's padding, waves and pre-pass are
    work of the kernel, not efficiencies, so no choice of parameters reaches this bound exactly).
    """
    att = F.prefill_attention(m, d, tokens, context, sequences, absorbed)
    if bound:
        old = K.roofline_s(att.flops, att.bytes, K.peak_flop_per_s(hw, d.attn_compute_bytes), hw.hbm_bytes_per_s,
                           mode)
    else:
        old = K.attention_s(hw, att.flops, att.bytes, context, d.attn_compute_bytes, mode)
    prompts = jnp.where(jnp.asarray(sequences) > 0, sequences, 1.0)  # tokens without a count: one prompt
    new = tokens / prompts
    prefix = jnp.maximum(jnp.asarray(context) - 0.5 * (new + 1.0), 0.0)
    heads = m.n_heads / d.tp
    if m.attention == "mla":
        if absorbed:
            kv_heads, dqk, dv = jnp.ones_like(heads), m.kv_lora_rank + m.qk_rope_dim, m.kv_lora_rank
        else:
            kv_heads, dqk, dv = heads, m.qk_nope_dim + m.qk_rope_dim, m.v_head_dim
    else:
        kv_heads, dqk, dv = jnp.maximum(m.n_kv_heads / d.tp, 1.0), m.head_dim, m.v_head_dim
    topk = jnp.where(m.index_topk > 0, m.index_topk, 0.0)
    windowed = jnp.where((m.sliding_window > 0) & (topk > 0), jnp.minimum(m.sliding_window, topk),
                         jnp.maximum(m.sliding_window, topk))

    def tiled(window: Array) -> Array:
        if bound:
            return K.prefill_attention_roofline_s(hw, prompts, new, prefix, heads, kv_heads, dqk, dv, window,
                                                  d.attn_compute_bytes, d.kv_bytes, mode)
        return K.prefill_attention_s(hw, prompts, new, prefix, heads, kv_heads, dqk, dv, window,
                                     d.attn_compute_bytes, d.kv_bytes, m.attention == "mla", mode)

    core = m.sliding_layer_frac * tiled(windowed) + (1.0 - m.sliding_layer_frac) * tiled(topk)
    idx = F.indexer_scoring(m, tokens, sequences, context)
    fp8_frac = 1.0 if bound else hw.eff.ctx_fp8_compute_frac
    mem_frac = 1.0 if bound else hw.eff.ctx_memory_frac
    indexer = K.kernel_s(idx.flops, idx.bytes, hw.fp8_flop_per_s, hw.hbm_bytes_per_s, fp8_frac, mem_frac, mode)
    return (core + indexer if hw.eff.ctx_tiles > 0.5 else old), att.flops


def _attention_layer(m: Model, hw: Hardware, d: Deployment, b: StepBatch, mode: Mode) -> tuple[Array, Array, Array]:
    """(core attention s, projection GEMM s, FLOPs) of one layer for the (micro-)batch `b`."""
    dec, pre, seqs, pre_ctx = b.decode_requests, b.prefill_tokens, b.prefill_sequences, b.prefill_context
    q_dec = dec * (1.0 + d.nextn)
    tokens = q_dec + pre
    main_w, kv_b_w = F.attention_weights_gpu(m, d.tp)
    wb, ab = d.gemm_weight_bytes, d.activation_bytes
    main = F.OpCost(2.0 * tokens * main_w, main_w * wb + tokens * 3.0 * m.hidden * ab)
    # Inputs the projections quantise: hidden (Q / KV down or QKV), the Q latent (MLA), the heads' outputs (O).
    main_inner = m.hidden + m.q_lora_rank + m.n_heads / d.tp * m.v_head_dim
    gemm_t = K.gemm_s(hw, main.flops, main.bytes, tokens, wb, mode, inner=main_inner,
                      shapes=F.attention_gemm_shapes(m, d.tp))
    flops = main.flops

    core_t, dec_op = decode_attention_s(m, hw, d, dec, b.decode_context, b.decode_context_spread, mode)
    flops = flops + dec_op.flops

    if m.attention == "mla":
        # Absorbed decode: kv_b on the query tokens.
        up_dec = F.OpCost(2.0 * q_dec * kv_b_w, kv_b_w * wb)
        kv_b = (F.kv_b_gemm_shape(m, d.tp),)
        gemm_t = gemm_t + K.gemm_s(hw, up_dec.flops, up_dec.bytes, q_dec, wb, mode, shapes=kv_b)
        flops = flops + up_dec.flops
        # Prefill takes the cheaper of expanding the latent of every context position it reads, or
        # attending in the latent space (what kernels choose for long cached prefixes).
        positions = F.prefill_kv_positions(pre, pre_ctx, seqs)
        outs = []
        for absorbed, up_rows in ((False, positions), (True, pre)):
            att_t, att_flops = prefill_core_attention_s(m, hw, d, pre, pre_ctx, seqs, absorbed, mode)
            up = F.OpCost(2.0 * up_rows * kv_b_w, kv_b_w * wb + up_rows * m.kv_lora_rank * ab)
            t = att_t + K.gemm_s(hw, up.flops, up.bytes, up_rows, wb, mode, inner=m.kv_lora_rank, shapes=kv_b)
            outs.append((t, att_flops + up.flops))
        (t_exp, f_exp), (t_abs, f_abs) = outs
        core_t = core_t + smooth.minimum(t_exp, t_abs, mode)
        flops = flops + jnp.where(t_abs < t_exp, f_abs, f_exp)
    else:
        att_t, att_flops = prefill_core_attention_s(m, hw, d, pre, pre_ctx, seqs, absorbed=False, mode=mode)
        core_t = core_t + att_t
        flops = flops + att_flops
    return core_t, gemm_t, flops


class LayerCosts(eqx.Module):
    """Times (s) and FLOPs of one layer of each kind on one GPU, for one (micro-)batch.

    The attention side (attention, projections, dense FFN, shared experts + router, TP all-reduce,
    elementwise) runs on the attention GPUs; the routed experts and their EP dispatch / combine on the
    MoE GPUs — the same GPUs without AFD, a separate group with it.
    """

    attention_s: Array
    attn_gemm_s: Array
    dense_ffn_s: Array
    moe_gemm_s: Array  # shared experts + router
    routed_s: Array
    dispatch_s: Array
    combine_s: Array
    tp_all_reduce_s: Array  # one all-reduce of the hidden state over TP
    elementwise_s: Array  # elementwise ops + per-layer launch overhead
    attn_flops: Array
    dense_ffn_flops: Array
    moe_gemm_flops: Array
    routed_flops: Array
    tokens: Array  # tokens per attention rank in this (micro-)batch


def attention_side(m: Model, hw: Hardware, d: Deployment, b: StepBatch, mode: Mode = HARD,
                   overhead_share: ArrayLike = 1.0) -> LayerCosts:
    """Attention-side costs of one layer for batch `b` on one attention rank; MoE-side fields are 0."""
    tokens = b.decode_requests * (1.0 + d.nextn) + b.prefill_tokens
    wb, ab = d.gemm_weight_bytes, d.activation_bytes
    attn_t, attn_gemm_t, attn_flops = _attention_layer(m, hw, d, b, mode)
    dense = F.dense_ffn(m, d, tokens, m.dense_intermediate)
    shared = F.dense_ffn(m, d, tokens, m.n_shared_experts * m.shared_intermediate)
    gate = F.router(m, d, tokens)
    zero = jnp.zeros_like(tokens)
    return LayerCosts(
        attention_s=attn_t,
        attn_gemm_s=attn_gemm_t,
        dense_ffn_s=K.gemm_s(hw, dense.flops, dense.bytes, tokens, wb, mode,
                             inner=m.hidden + m.dense_intermediate / d.tp,
                             shapes=F.ffn_gemm_shapes(m, d, m.dense_intermediate)),
        moe_gemm_s=(K.gemm_s(hw, shared.flops, shared.bytes, tokens, wb, mode,
                             inner=m.hidden + m.n_shared_experts * m.shared_intermediate / d.tp,
                             shapes=F.ffn_gemm_shapes(m, d, m.n_shared_experts * m.shared_intermediate))
                    + K.gemm_s(hw, gate.flops, gate.bytes, tokens, ab, mode,
                               shapes=((m.n_routed_experts, m.hidden),))),
        routed_s=zero,
        dispatch_s=zero,
        combine_s=zero,
        tp_all_reduce_s=comm.all_reduce_s(hw, tokens * m.hidden * ab, d.tp),
        elementwise_s=(K.memory_bound_s(hw, F.elementwise_bytes(m, d, tokens))
                       + hw.eff.layer_overhead_s * overhead_share),
        attn_flops=attn_flops,
        dense_ffn_flops=dense.flops,
        moe_gemm_flops=shared.flops + gate.flops,
        routed_flops=zero,
        tokens=tokens,
    )


def routed_experts_s(m: Model, hw: Hardware, d: Deployment, instance_tokens: ArrayLike,
                     mode: Mode = HARD) -> tuple[Array, Array]:
    """(time s, FLOPs) of one MoE layer's routed experts on the busiest of the `ep × moe_tp` MoE GPUs
    that serve `instance_tokens` tokens."""
    load = F.expert_load(m, d, instance_tokens)
    routed = F.routed_experts(m, d, load)
    grouped = K.grouped_gemm_s(hw, routed.flops, routed.bytes, load.rows_per_expert, d.moe_weight_bytes, mode)
    layer = K.moe_layer_s(hw, load.tokens, load.active_experts, instance_tokens, m.hidden,
                          m.moe_intermediate / d.moe_tp, m.top_k, m.n_routed_experts / d.ep, d.moe_weight_bytes,
                          d.activation_bytes)
    return (layer if hw.eff.moe_terms > 0.5 else grouped), routed.flops


def layer_costs(m: Model, hw: Hardware, d: Deployment, b: StepBatch, mode: Mode = HARD,
                overhead_share: ArrayLike = 1.0) -> LayerCosts:
    """All per-layer costs of an instance whose attention and MoE layers share the same GPUs."""
    side = attention_side(m, hw, d, b, mode, overhead_share)
    tokens = side.tokens
    routed_t, routed_flops = routed_experts_s(m, hw, d, tokens * d.dp, mode)
    local = tokens / d.tp  # tokens each GPU of the instance dispatches
    gathered = jnp.where(d.ep > 1, tokens * d.dp * m.top_k / d.ep, tokens * d.dp) * m.hidden
    dispatch_t = (comm.all_to_all_s(hw, local * m.top_k * m.hidden * d.dispatch_bytes, d.ep)
                  + comm.all_gather_s(hw, gathered * d.dispatch_bytes, d.moe_tp))
    combine_t = (comm.all_to_all_s(hw, local * m.top_k * m.hidden * d.combine_bytes, d.ep)
                 + comm.reduce_scatter_s(hw, gathered * d.combine_bytes, d.moe_tp))
    return eqx.tree_at(lambda c: (c.routed_s, c.dispatch_s, c.combine_s, c.routed_flops), side,
                       (routed_t, dispatch_t, combine_t, routed_flops))


def layer_counts(m: Model, d: Deployment) -> tuple[Array, Array]:
    """(MoE layers, dense layers) an iteration runs, MTP draft layers included.

    Draft (MTP) layers run on decode tokens; each is costed as one more layer of the model's kind."""
    is_moe = jnp.where(m.n_moe_layers > 0, 1.0, 0.0)
    return m.n_moe_layers + d.nextn * is_moe, m.n_dense_layers + d.nextn * (1.0 - is_moe)


def step_cost(m: Model, hw: Hardware, d: Deployment, batch: StepBatch, mode: Mode = HARD) -> StepCost:
    """Time, breakdown and memory of one serving iteration (see the module docstring).

    Args:
        m, hw, d: the model, the GPU system and the instance layout.
        batch: per attention-DP rank decode requests / context and prefill tokens / context.
        mode: `HARD` for reports, `SMOOTH` for gradient-based optimisation.
    """
    split = 1.0 + d.two_batch_overlap
    mb = jax.tree.map(lambda x: x / split, batch)
    mb = eqx.tree_at(lambda x: (x.decode_context, x.decode_context_spread, x.prefill_context), mb,
                     (batch.decode_context, batch.decode_context_spread, batch.prefill_context))
    lc = layer_costs(m, hw, d, mb, mode, overhead_share=1.0 / split)
    tokens = lc.tokens  # per rank, per micro-batch
    ab = d.activation_bytes

    # ---- per-layer totals for one micro-batch, then overlap of the two ----
    attn_common = lc.attention_s + lc.attn_gemm_s + 2.0 * lc.tp_all_reduce_s + lc.elementwise_s
    dense_compute = attn_common + lc.dense_ffn_s
    moe_compute = attn_common + lc.moe_gemm_s + lc.routed_s
    moe_comm = lc.dispatch_s + lc.combine_s
    tbo = d.two_batch_overlap > 0.5
    moe_layer_t = jnp.where(tbo, split * smooth.maximum(moe_compute, moe_comm, mode), moe_compute + moe_comm)
    dense_layer_t = split * dense_compute
    n_moe, n_dense = layer_counts(m, d)

    head_rows = mb.decode_requests * (1.0 + 2.0 * d.nextn) + mb.prefill_sequences
    head = F.lm_head(m, d, head_rows)
    head_t = split * K.gemm_s(hw, head.flops, head.bytes, head_rows, ab, mode, shapes=F.lm_head_gemm_shape(m, d))
    pp_hop = comm.p2p_s(hw, split * tokens * m.hidden * ab, d.gpus <= hw.scale_up_gpus)
    pp_t = (d.pp - 1.0) * pp_hop

    # Layer costs are per GPU of the stage holding the layer, so one iteration crossing all stages
    # takes all of them; a stage alone takes 1/pp of them.
    layers_t = n_moe * moe_layer_t + n_dense * dense_layer_t
    total = layers_t + pp_t + head_t + hw.eff.step_overhead_s
    interval = jnp.where(d.pp > 1.0, layers_t / d.pp + pp_hop + head_t + hw.eff.step_overhead_s, total)

    # ---- breakdown (both micro-batches) ----
    n_all = n_moe + n_dense
    attention_s = split * n_all * lc.attention_s
    gemm_s = split * (n_all * lc.attn_gemm_s + n_dense * lc.dense_ffn_s + n_moe * lc.moe_gemm_s) + head_t
    moe_s = split * n_moe * lc.routed_s
    dispatch_s = split * n_moe * lc.dispatch_s
    combine_s = split * n_moe * lc.combine_s
    tp_comm_s = split * n_all * 2.0 * lc.tp_all_reduce_s
    other_s = split * n_all * lc.elementwise_s + hw.eff.step_overhead_s
    parts = attention_s + gemm_s + moe_s + dispatch_s + combine_s + tp_comm_s + pp_t + other_s
    hidden_s = jnp.where(tbo, jnp.maximum(parts - total, 0.0), 0.0)

    # ---- FLOPs and memory ----
    flops = split * (n_all * lc.attn_flops + n_dense * lc.dense_ffn_flops
                     + n_moe * (lc.moe_gemm_flops + lc.routed_flops) + head.flops) / d.pp
    weights = Mem.weight_bytes_per_gpu(m, d)
    kv_held = kv_bytes_held(m, d, batch)
    acts = Mem.activation_bytes_per_gpu(m, d, split * tokens, split * head_rows)
    return StepCost(
        total_s=total,
        interval_s=interval,
        attention_s=attention_s,
        gemm_s=gemm_s,
        moe_s=moe_s,
        dispatch_s=dispatch_s,
        combine_s=combine_s,
        tp_comm_s=tp_comm_s,
        pp_comm_s=pp_t,
        other_s=other_s,
        hidden_s=hidden_s,
        flops=flops,
        weight_bytes=weights,
        kv_bytes=kv_held,
        activation_bytes=acts,
        memory_bytes=weights + kv_held + acts,
        decode_tokens_per_request=1.0 + d.nextn * d.nextn_accept,
        valid=valid_parallelism(m, d),
    )


def kv_bytes_held(m: Model, d: Deployment, batch: StepBatch) -> Array:
    """KV bytes one GPU holds for the batch: its decode requests and the prompts being prefilled."""
    decode = batch.decode_requests * Mem.kv_bytes_per_request_gpu(m, d, batch.decode_context,
                                                                  batch.decode_context_spread)
    prompts = F.prefill_kv_positions(batch.prefill_tokens, batch.prefill_context, batch.prefill_sequences)
    return decode + Mem.kv_bytes_per_token_gpu(m, d) * F.effective_context(m, prompts)


@eqx.filter_jit
def step_cost_batch(m: Model, hw: Hardware, d: Deployment, batch: StepBatch, mode: Mode = HARD,
                    block: int = DEFAULT_BLOCK) -> StepCost:
    """`step_cost` for many configurations at once: every array leaf of `d` and `batch` carries a
    leading axis of N configurations (scalars are broadcast). One compilation per (model kind, N, mode).
    """
    return blocked_vmap(lambda dd, bb: step_cost(m, hw, dd, bb, mode), block)(d, batch)
