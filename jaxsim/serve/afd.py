"""Attention-FFN disaggregation (AFD), on an aggregated (Agg+AFD) or a P/D base (P/D+AFD).

An AFD instance has `nA = tp × dp` attention GPUs (attention TP × attention DP; they hold the KV, the
attention and dense weights, shared experts and router) and `nF = ep × moe_tp` FFN GPUs (they hold the
routed experts of every MoE layer). The batch of each attention rank is split into `M` micro-batches
that ping-pong between the groups. Per MoE layer a micro-batch passes four stages, each priced at
the micro-batch's size (so weights are re-read per micro-batch):

    T_a  attention side on one attention GPU        T_a2f  attention → FFN (dispatch, nA × nF exchange)
    T_f  routed experts on one FFN GPU              T_f2a  FFN → attention (combine)

Each of the four resources (attention GPUs, FFN GPUs, the A→F and F→A directions of the link) serves M
micro-batches per layer, and one micro-batch cannot start its next layer before its round trip ends:

    layer time = max(M·T_a, M·T_f, M·T_a2f, M·T_f2a, T_a + T_a2f + T_f + T_f2a)

With many micro-batches and free communication this tends to max(attention, FFN) of the whole batch;
with M = 1 it is the sum of the four stages. The exchange crosses NVLink when both groups fit one
scale-up domain, else the NICs; each direction costs the link's hop latency + the fixed per-call
`collective_latency_s` (as every collective in `cost/comm.py`) + bytes of the busiest GPU / bandwidth.
Dense layers (and MTP draft layers of dense models) run on the attention GPUs alone, M micro-batches
in a row.

On an agg base the attention ranks prefill one prompt's chunk per iteration beside the decodes (the spread
mean, not `serve/agg.py`'s bursty closed-loop groups); a closed loop whose measurement includes the clients'
synchronised start (`Load.rounds` > 0) adds that round's wave as in `serve/agg.py`: a rank's prompts in
full-chunk bursts back to back, (J − own) / 2 bursts of waiting on average, weighted 1 / rounds.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from jaxsim import smooth
from jaxsim.cost import comm
from jaxsim.cost import flops as F
from jaxsim.cost import kernels as K
from jaxsim.cost import memory as Mem
from jaxsim.serve.agg import chunk_batch, decode_batch, group_wave_s, mixed_batch
from jaxsim.serve.disagg import DecodePool, compose_pd
from jaxsim.serve.metrics import Breakdown, Metrics, assemble
from jaxsim.serve.queueing import (
    SATURATION,
    Load,
    first_round_share,
    queue_wait,
    running_batch,
    served_rate,
)
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO, Deployment, Hardware, Model, StepBatch, Workload, _num
from jaxsim.step import _divides, attention_side, kv_bytes_held, layer_counts, routed_experts_s

AFD_BASES = ("agg", "disagg")


class AFDConfig(eqx.Module):
    """AFD instances of `deploy`: attention on tp × dp GPUs, experts on ep × moe_tp GPUs, `micro_batches`
    per iteration, `batch` requests per attention-DP rank. `base = "agg"`: attention ranks also prefill
    up to `chunk` tokens per iteration; `base = "disagg"`: prompts come from `prefill` instances
    (`prefill_batch` prompts per rank, `prefill_workers` of them; `workers = 0` rate-matches)."""

    deploy: Deployment
    micro_batches: Array = _num(2.0)
    batch: Array = _num(64.0)
    chunk: Array = _num(8192.0)
    workers: Array = _num(1.0)
    base: str = eqx.field(static=True, default="agg")
    prefill: Deployment = eqx.field(default_factory=Deployment)
    prefill_batch: Array = _num(1.0)
    prefill_workers: Array = _num(1.0)

    def __check_init__(self) -> None:
        if self.base not in AFD_BASES:
            raise ValueError(f"AFD base must be one of {AFD_BASES}, got {self.base!r}")


def afd_gpus(d: Deployment) -> tuple[Array, Array]:
    """(attention GPUs, FFN GPUs) of one AFD instance."""
    return d.tp * d.dp, d.ep * d.moe_tp


def valid_afd(m: Model, d: Deployment, micro_batches: Array) -> Array:
    """1.0 when TP divides the heads, EP the experts, degrees ≥ 1, M ≥ 1 and there is no PP."""
    ok = (d.tp >= 1) & (d.dp >= 1) & (d.ep >= 1) & (d.moe_tp >= 1) & (micro_batches >= 1) & (d.pp == 1)
    ok = ok & _divides(d.tp, m.n_heads) & (m.n_routed_experts > 0) & _divides(d.ep, m.n_routed_experts)
    ok = ok & (d.nextn >= 0) & (d.nextn_accept >= 0) & (d.nextn_accept <= 1)
    return ok.astype(d.tp.dtype)


class AFDIteration(eqx.Module):
    """One AFD iteration: latency, breakdown, memory per GPU of each group, FLOPs per GPU."""

    total_s: Array
    breakdown: Breakdown
    attention_memory_bytes: Array
    ffn_memory_bytes: Array
    attention_flops: Array
    ffn_flops: Array
    valid: Array


def afd_iteration(m: Model, hw: Hardware, d: Deployment, micro_batches: Array, batch: StepBatch,
                  mode: Mode = HARD) -> AFDIteration:
    """Price one iteration of an AFD instance for `batch` (per attention-DP rank)."""
    M = micro_batches
    mb = eqx.tree_at(lambda b: (b.decode_requests, b.prefill_tokens, b.prefill_sequences), batch,
                     (batch.decode_requests / M, batch.prefill_tokens / M, batch.prefill_sequences / M))
    side = attention_side(m, hw, d, mb, mode, overhead_share=1.0 / M)
    n_attn, n_ffn = afd_gpus(d)
    common = side.attention_s + side.attn_gemm_s + 2.0 * side.tp_all_reduce_s + side.elementwise_s
    t_a = common + side.moe_gemm_s
    t_a_dense = common + side.dense_ffn_s

    ffn_tokens = side.tokens * d.dp  # every attention rank's micro-batch
    t_f, f_flops = routed_experts_s(m, hw, d, ffn_tokens, mode)
    imbalance = jnp.where(d.ep > 1, d.expert_imbalance, 1.0)
    per_token = m.top_k * m.hidden
    send_a = side.tokens / d.tp * per_token  # elements each attention GPU sends per micro-batch
    recv_f = ffn_tokens * per_token / d.ep * imbalance  # every MoE-TP rank of a group gets its tokens
    same_domain = n_attn + n_ffn <= hw.scale_up_gpus
    bw = jnp.where(same_domain, hw.scale_up_bytes_per_s * hw.eff.scale_up_frac,
                   hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)
    # Hop latency of the link, plus the fixed per-call time every collective pays (comm._fixed: the
    # calibrated launch and synchronisation cost the EP all-to-all also pays), once per direction.
    lat = jnp.where(same_domain, hw.scale_up_latency_s, hw.scale_out_latency_s) + comm._fixed(hw, n_attn + n_ffn)
    t_a2f = lat + smooth.maximum(send_a, recv_f, mode) * d.dispatch_bytes / bw
    t_f2a = lat + smooth.maximum(send_a * d.moe_tp, recv_f, mode) * d.combine_bytes / bw

    def mx(*xs: Array) -> Array:
        out = xs[0]
        for x in xs[1:]:
            out = smooth.maximum(out, x, mode)
        return out

    moe_layer = mx(M * t_a, M * t_f, M * t_a2f, M * t_f2a, t_a + t_a2f + t_f + t_f2a)
    dense_layer = M * t_a_dense
    n_moe, n_dense = layer_counts(m, d)
    head_rows = mb.decode_requests * (1.0 + 2.0 * d.nextn) + mb.prefill_sequences
    head = F.lm_head(m, d, head_rows)
    head_t = M * K.gemm_s(hw, head.flops, head.bytes, head_rows, d.activation_bytes, mode,
                          shapes=F.lm_head_gemm_shape(m, d))
    total = n_moe * moe_layer + n_dense * dense_layer + head_t + hw.eff.step_overhead_s

    n_all = n_moe + n_dense
    parts = Breakdown(
        attention_s=M * n_all * side.attention_s,
        gemm_s=M * (n_all * side.attn_gemm_s + n_dense * side.dense_ffn_s + n_moe * side.moe_gemm_s) + head_t,
        moe_s=M * n_moe * t_f,
        dispatch_s=M * n_moe * t_a2f,
        combine_s=M * n_moe * t_f2a,
        tp_comm_s=M * n_all * 2.0 * side.tp_all_reduce_s,
        pp_comm_s=jnp.zeros_like(total),
        other_s=M * n_all * side.elementwise_s + hw.eff.step_overhead_s,
        hidden_s=jnp.zeros_like(total),
    )
    summed = sum(getattr(parts, k) for k in ("attention_s", "gemm_s", "moe_s", "dispatch_s", "combine_s",
                                               "tp_comm_s", "other_s"))
    parts = eqx.tree_at(lambda p: p.hidden_s, parts, jnp.maximum(summed - total, 0.0))

    attn_weights = Mem.attention_side_weight_bytes_per_gpu(m, d)
    attn_acts = Mem.activation_bytes_per_gpu(m, eqx.tree_at(lambda x: x.ep, d, jnp.maximum(d.ep, 1e9)),
                                             side.tokens, head_rows)  # no local experts on this side
    attn_mem = attn_weights + kv_bytes_held(m, d, batch) + attn_acts
    ffn_acts = recv_f * (1.0 + 2.0 * m.moe_intermediate / (d.moe_tp * m.hidden)) * d.activation_bytes
    ffn_mem = Mem.routed_weight_bytes_per_gpu(m, d) + ffn_acts
    attn_flops = M * (n_all * side.attn_flops + n_dense * side.dense_ffn_flops + n_moe * side.moe_gemm_flops
                      + head.flops)
    return AFDIteration(total, parts, attn_mem, ffn_mem, attn_flops, M * n_moe * f_flops,
                        valid_afd(m, d, micro_batches))


def _afd_pool(m: Model, hw: Hardware, cfg: AFDConfig, w: Workload, load: Load, instances: Array,
              mode: Mode) -> tuple[DecodePool, AFDIteration, AFDIteration]:
    """The AFD instances as a pool, plus the iterations at the running and the configured batch."""
    d = cfg.deploy
    a = 1.0 + d.nextn * d.nextn_accept
    iters = w.output_tokens / a
    agg_base = cfg.base == "agg"
    batch_cap = smooth.minimum(cfg.batch, cfg.chunk * iters / w.input_tokens, mode) if agg_base else cfg.batch

    def iteration(running: Array) -> AFDIteration:
        b = mixed_batch(w, running, iters, cfg.chunk, mode) if agg_base else decode_batch(w, running)
        return afd_iteration(m, hw, d, cfg.micro_batches, b, mode)

    full = iteration(batch_cap)
    if load.kind == "saturation":
        running, it = batch_cap, full
    else:
        running = running_batch(load, batch_cap, instances * d.dp, iters, full.total_s)
        it = iteration(running)
    n_attn, n_ffn = afd_gpus(d)
    usable = Mem.usable_bytes_per_gpu(hw)
    peak = K.peak_flop_per_s(hw, d.gemm_weight_bytes)
    pool = DecodePool(
        tpot_s=it.total_s / a,
        requests_per_s=served_rate(load, d.dp * running / iters / it.total_s, d.dp * batch_cap / iters / full.total_s,
                                   instances),
        capacity_rps=d.dp * batch_cap / iters / full.total_s,
        slots=d.dp * batch_cap,
        gpus=n_attn + n_ffn,
        memory_frac=jnp.maximum(it.attention_memory_bytes, it.ffn_memory_bytes) / usable,
        running=running,
        mfu=(n_attn * it.attention_flops + n_ffn * it.ffn_flops) / it.total_s / ((n_attn + n_ffn) * peak),
        valid=it.valid,
        breakdown=it.breakdown,
        memory_bytes=jnp.maximum(it.attention_memory_bytes, it.ffn_memory_bytes),
        attention_gpus=n_attn,
        ffn_gpus=n_ffn,
        attention_memory_bytes=it.attention_memory_bytes,
        ffn_memory_bytes=it.ffn_memory_bytes,
    )
    return pool, it, full


def afd_metrics(m: Model, hw: Hardware, cfg: AFDConfig, w: Workload, slo: SLO, load: Load = SATURATION,
                mode: Mode = HARD) -> Metrics:
    """Serving metrics of Agg+AFD or P/D+AFD (see the module docstring)."""
    if cfg.base == "disagg":
        instances = jnp.where(cfg.workers <= 0, 1.0, cfg.workers)
        pool, _, _ = _afd_pool(m, hw, cfg, w, load, instances, mode)
        return compose_pd(m, hw, cfg.prefill, cfg.prefill_batch, cfg.prefill_workers, cfg.workers, pool, w, slo,
                          load, mode)
    instances = cfg.workers
    pool, _, full = _afd_pool(m, hw, cfg, w, load, instances, mode)
    chunks = smooth.ceil(w.input_tokens / cfg.chunk, mode)
    wait, overload = queue_wait(load, instances * pool.slots, instances * pool.capacity_rps,
                                w.input_tokens / cfg.chunk * full.total_s, instances * cfg.deploy.dp)
    with_chunk = afd_iteration(m, hw, cfg.deploy, cfg.micro_batches, chunk_batch(w, pool.running, cfg.chunk, mode),
                               mode)
    ttft = chunks * with_chunk.total_s + wait
    if load.kind == "concurrency":
        # The measured first round (`Load.rounds`): a rank's prompts arrive together and are prefilled in bursts
        # of whole chunk budgets back to back, as in `serve/agg.py` (the steady state keeps one prompt's chunk).
        iters = w.output_tokens / (1.0 + cfg.deploy.nextn * cfg.deploy.nextn_accept)
        ttft = ttft + first_round_share(load) * group_wave_s(
            load, w, pool.running, iters, cfg.chunk, chunks, 1.0,
            lambda b: afd_iteration(m, hw, cfg.deploy, cfg.micro_batches, b, mode), mode)
    chunk_mem = jnp.maximum(with_chunk.attention_memory_bytes, with_chunk.ffn_memory_bytes)
    memory_frac = jnp.maximum(pool.memory_frac, chunk_mem / Mem.usable_bytes_per_gpu(hw))
    return assemble(ttft_s=ttft, tpot_s=pool.tpot_s, requests_per_s=instances * pool.requests_per_s,
                    gpus=instances * pool.gpus, output_tokens=w.output_tokens, slo=slo, memory_frac=memory_frac,
                    valid=pool.valid, overload=overload, decode_batch=pool.running, mfu=pool.mfu,
                    breakdown=pool.breakdown, decode_memory_bytes=pool.memory_bytes, mode=mode,
                    attention_gpus=instances * pool.attention_gpus, ffn_gpus=instances * pool.ffn_gpus,
                    attention_memory_bytes=pool.attention_memory_bytes, ffn_memory_bytes=pool.ffn_memory_bytes)
