"""Memory per GPU: weights by parallelism and precision, KV cache, activations, runtime reserve.

All results are bytes on the most loaded GPU of one instance (one pipeline stage holds
`n_layers / pp` layers; the last stage also holds the LM head and, when speculative decoding is on,
the MTP module).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim.cost import flops as F
from jaxsim.spec import Deployment, Hardware, Model


def attention_weights_per_layer_gpu(m: Model, d: Deployment) -> Array:
    """Attention weights (elements) one TP rank holds per layer."""
    main, kv_b = F.attention_weights_gpu(m, d.tp)
    return main + kv_b


def routed_layer_weight_bytes_gpu(m: Model, d: Deployment) -> Array:
    """Bytes of one MoE layer's routed experts on one GPU: E/ep experts at 1/moe_tp of their width."""
    return m.n_routed_experts / d.ep * F.ffn_params(m.hidden, m.moe_intermediate) / d.moe_tp * d.moe_weight_bytes


def moe_dense_layer_weight_bytes_gpu(m: Model, d: Deployment) -> Array:
    """Bytes of one MoE layer's dense part on one GPU: TP-sharded shared experts and the router."""
    shared = m.n_shared_experts * F.ffn_params(m.hidden, m.shared_intermediate) / d.tp
    return shared * d.gemm_weight_bytes + m.hidden * m.n_routed_experts * d.activation_bytes


def attention_side_weight_bytes_per_gpu(m: Model, d: Deployment) -> Array:
    """Everything but the routed experts on one GPU: attention, dense FFNs, shared experts, router,
    embedding / LM head, and the MTP module's share. In AFD this is what an attention GPU holds."""
    per_stage_layers = m.n_layers / d.pp
    attn = per_stage_layers * attention_weights_per_layer_gpu(m, d) * d.gemm_weight_bytes
    dense = m.n_dense_layers / d.pp * F.ffn_params(m.hidden, m.dense_intermediate) / d.tp * d.gemm_weight_bytes
    moe_dense = m.n_moe_layers / d.pp * moe_dense_layer_weight_bytes_gpu(m, d)
    # Embedding on the first stage, LM head on the last: one GPU holds both only without PP.
    one_table = m.vocab * m.hidden / d.tp * d.activation_bytes
    tables = jnp.where(d.pp > 1.0, 1.0, 2.0 - m.tied_embeddings) * one_table
    # The MTP draft module (one MoE layer each) lives with the LM head when speculative decoding is on.
    mtp = mtp_layers(m, d) * (attention_weights_per_layer_gpu(m, d) * d.gemm_weight_bytes
                              + moe_dense_layer_weight_bytes_gpu(m, d))
    return attn + dense + moe_dense + tables + mtp


def mtp_layers(m: Model, d: Deployment) -> Array:
    """MTP modules held in memory: the model's own, when speculative decoding is on."""
    return jnp.where(d.nextn > 0, 1.0, 0.0) * m.n_mtp_layers


def routed_weight_bytes_per_gpu(m: Model, d: Deployment) -> Array:
    """Routed experts of all MoE layers of one PP stage (and of the MTP module) on one GPU."""
    return (m.n_moe_layers / d.pp + mtp_layers(m, d)) * routed_layer_weight_bytes_gpu(m, d)


def weight_bytes_per_gpu(m: Model, d: Deployment) -> Array:
    """Weights on the most loaded GPU of one instance (attention and experts on the same GPUs)."""
    return attention_side_weight_bytes_per_gpu(m, d) + routed_weight_bytes_per_gpu(m, d)


def kv_bytes_per_token_gpu(m: Model, d: Deployment) -> Array:
    """KV bytes one token of context occupies on one GPU (its TP share of its PP stage's layers)."""
    per_layer = F.kv_elems_per_token_layer(m) * F.kv_layer_share(m, d) * d.kv_bytes
    per_layer = per_layer + F.index_bytes_per_token_layer(m)
    return m.n_layers / d.pp * per_layer


def kv_bytes_per_request_gpu(m: Model, d: Deployment, context: ArrayLike, spread: ArrayLike = 0.0) -> Array:
    """Mean KV bytes a request of `context` (± a uniform `spread`) tokens holds on one GPU;
    sliding-window layers keep only the window."""
    return kv_bytes_per_token_gpu(m, d) * F.effective_context(m, context, spread)


def activation_bytes_per_gpu(m: Model, d: Deployment, tokens: ArrayLike, logit_rows: ArrayLike) -> Array:
    """Peak activation workspace for `tokens` tokens per rank in one iteration (an estimate).

    The hidden state and its residual (a few copies), the widest FFN intermediate (dense layer or the
    routed tokens of the local experts), MoE dispatch buffers, and FP32 logits of the rows that need them.
    """
    assignments = tokens * d.dp / d.ep * m.top_k * d.expert_imbalance
    dense_width = jnp.maximum(m.dense_intermediate, m.n_shared_experts * m.shared_intermediate) / d.tp
    ffn = jnp.maximum(tokens * 2.0 * dense_width, assignments * 2.0 * m.moe_intermediate / d.moe_tp)
    hidden = tokens * 6.0 * m.hidden
    dispatch = assignments * m.hidden
    return (hidden + ffn + dispatch) * d.activation_bytes + 4.0 * logit_rows * m.vocab / d.tp


def usable_bytes_per_gpu(hw: Hardware) -> Array:
    """HBM left after the runtime reserve (CUDA context, graphs, communication buffers, fragmentation)."""
    return hw.hbm_bytes * (1.0 - hw.eff.runtime_reserve_frac)


def kv_capacity_tokens(m: Model, hw: Hardware, d: Deployment, tokens_per_step: ArrayLike,
                       logit_rows: ArrayLike) -> Array:
    """Tokens of KV one attention-DP rank can hold besides weights and activations (may be negative:
    then the weights alone do not fit)."""
    free = (usable_bytes_per_gpu(hw) - weight_bytes_per_gpu(m, d)
            - activation_bytes_per_gpu(m, d, tokens_per_step, logit_rows))
    return free / kv_bytes_per_token_gpu(m, d)
