"""Prefill/decode (P/D) disaggregation.

Prefill instances run whole prompts, `prefill_batch` per attention-DP rank per iteration; decode
instances run `decode_batch` requests per rank. After prefill each request's KV (cached prefix + input,
all layers) moves to a decode instance: every GPU of the sending DP rank ships its share in parallel,
over NVLink when both instances fit one scale-up domain, else over the NICs.

Rates (requests/s per instance): prefill r_p = dp_p × prefill_batch / prefill iteration;
decode r_d = dp_d × pp_d × decode_batch / (output / a × decode iteration).
Given worker counts, the slower pool sets the system rate min(W_p r_p, W_d r_d). With
`decode_workers = 0` the pools are rate-matched: one decode instance and W_p = r_d / r_p prefill
instances (continuous), which gives the closed form
    output tokens/s/GPU = output / (g_p / r_p + g_d / r_d).
TTFT = `request_overhead_s` (the framework's fixed per-request time: HTTP, tokenisation, routing,
streaming) + queueing + the prefill iteration + the KV transfer + one decode step (the decode instance
admits the request at its next iteration and emits the first token with it). Under a closed loop the
clients queue at the prefill pool as at a station of prefill-rank × prefill-batch servers in a closed network
(`queueing.closed_network_wait`, approximate mean-value analysis), and never less than the slower pool
imposes (`queueing.bottleneck_wait`), so the model's own numbers obey Little's law; when the measurement
includes the clients' synchronised start (`Load.rounds` > 0), its first round adds the wait of each prefill
rank's share of the N prompts in prefill batches, weighted 1 / rounds (`queueing.first_round_share`).
TPOT = decode iteration latency / a.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim.cost import comm
from jaxsim.cost import flops as F
from jaxsim.cost import memory as Mem
from jaxsim.serve.agg import decode_batch, pool_mfu
from jaxsim.serve.metrics import Breakdown, Metrics, assemble
from jaxsim.serve.queueing import (
    SATURATION,
    Load,
    bottleneck_wait,
    closed_network_wait,
    first_round_share,
    queue_wait,
    running_batch,
    served_rate,
    wave_iterations,
)
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO, Deployment, Hardware, Model, StepBatch, Workload, _num
from jaxsim.step import StepCost, step_cost


class DisaggConfig(eqx.Module):
    """P/D disaggregation: prefill and decode instances with their own layout, batch and count
    (`decode_workers = 0`: rate-matched, see the module docstring)."""

    prefill: Deployment
    decode: Deployment
    prefill_batch: Array = _num(1.0)
    decode_batch: Array = _num(64.0)
    prefill_workers: Array = _num(1.0)
    decode_workers: Array = _num(0.0)
    request_overhead_s: Array = _num(0.0)  # per-request time outside the engine iterations, added to TTFT


def prefill_step(m: Model, hw: Hardware, d: Deployment, w: Workload, prompts: Array, mode: Mode) -> StepCost:
    """One prefill iteration of `prompts` whole prompts per DP rank (cached prefix attended, not computed)."""
    b = StepBatch(prefill_tokens=prompts * w.input_tokens, prefill_context=w.prefix_tokens + 0.5 * w.input_tokens,
                  prefill_sequences=prompts)
    return step_cost(m, hw, d, b, mode)


def kv_transfer_s(m: Model, hw: Hardware, sender: Deployment, receiver_gpus: Array, w: Workload) -> Array:
    """Moving one request's KV (prefix + input, all layers, at the cache precision) from a prefill DP
    rank to a decode instance: the rank's TP × PP GPUs send their shares in parallel."""
    kv = F.kv_bytes_per_token(m, sender.kv_bytes) * F.effective_context(m, w.prefix_tokens + w.input_tokens)
    same_domain = sender.gpus + receiver_gpus <= hw.scale_up_gpus
    return comm.p2p_s(hw, kv / (sender.tp * sender.pp), same_domain)


class DecodePool(eqx.Module):
    """What a decode pool (plain or AFD) tells the P/D composition."""

    tpot_s: Array
    requests_per_s: Array  # per instance at the running batch
    capacity_rps: Array  # per instance at the configured batch
    slots: Array  # requests per instance
    gpus: Array
    memory_frac: Array
    running: Array
    mfu: Array
    valid: Array
    breakdown: Breakdown
    memory_bytes: Array
    attention_gpus: Array
    ffn_gpus: Array
    attention_memory_bytes: Array
    ffn_memory_bytes: Array


def plain_decode_pool(m: Model, hw: Hardware, d: Deployment, batch: Array, w: Workload, load: Load,
                      instances: Array, mode: Mode) -> DecodePool:
    """A decode pool of identical instances of `d`, `batch` requests per DP rank (× pp groups)."""
    a = 1.0 + d.nextn * d.nextn_accept
    iters = w.output_tokens / a
    groups = d.dp * d.pp
    full = step_cost(m, hw, d, decode_batch(w, batch), mode)
    if load.kind == "saturation":
        running, cost = batch, full
    else:
        running = running_batch(load, batch, instances * groups, iters, full.total_s)
        cost = step_cost(m, hw, d, decode_batch(w, running), mode)
    zero = jnp.zeros_like(running)
    return DecodePool(
        tpot_s=cost.total_s / a,
        requests_per_s=served_rate(load, groups * running / iters / cost.total_s, groups * batch / iters / full.total_s,
                                   instances),
        capacity_rps=groups * batch / iters / full.total_s,
        slots=groups * batch,
        gpus=d.gpus,
        memory_frac=cost.memory_bytes / Mem.usable_bytes_per_gpu(hw),
        running=running,
        mfu=pool_mfu(cost, hw, d),
        valid=cost.valid,
        breakdown=Breakdown.of_step(cost),
        memory_bytes=cost.memory_bytes,
        attention_gpus=zero,
        ffn_gpus=zero,
        attention_memory_bytes=zero,
        ffn_memory_bytes=zero,
    )


def compose_pd(m: Model, hw: Hardware, prefill: Deployment, prefill_batch: Array, prefill_workers: Array,
               decode_workers: Array, pool: DecodePool, w: Workload, slo: SLO, load: Load, mode: Mode,
               request_overhead_s: ArrayLike = 0.0) -> Metrics:
    """Metrics of a prefill pool feeding `pool` (plain decode or AFD) under rate matching or given counts."""
    pre = prefill_step(m, hw, prefill, w, prefill_batch, mode)
    r_p = prefill.dp * prefill_batch / pre.interval_s
    matched = decode_workers <= 0
    w_d = jnp.where(matched, 1.0, decode_workers)
    # Rate matching sizes the prefill pool to the decode pool's capacity at its configured batch.
    w_p = jnp.where(matched, pool.capacity_rps / r_p, prefill_workers)
    rate = jnp.minimum(w_p * r_p, w_d * pool.requests_per_s)
    capacity = jnp.minimum(w_p * r_p, w_d * pool.capacity_rps)
    gpus = w_p * prefill.gpus + w_d * pool.gpus
    wait, overload = queue_wait(load, w_d * pool.slots, capacity, pre.interval_s / (prefill.dp * prefill_batch), w_p)
    unqueued = request_overhead_s + pre.total_s + kv_transfer_s(m, hw, prefill, pool.gpus, w) + pool.tpot_s
    # Closed loop: the N clients queue at the prefill pool (its ranks × prefill batch servers, one prefill
    # iteration each), spending the rest of each cycle elsewhere; never below the slower pool's asymptotic bound.
    cycle = unqueued + (w.output_tokens - 1.0) * pool.tpot_s  # one request's time in the system, unqueued
    wait = jnp.maximum(wait, jnp.maximum(
        bottleneck_wait(load, capacity, cycle, mode),
        closed_network_wait(load, w_p * prefill.dp * prefill_batch, pre.interval_s, cycle - pre.total_s, mode)))
    # A measured synchronised start: each prefill rank's share of the N prompts queues in prefill batches.
    first_wave = wave_iterations(load, load.value / (w_p * prefill.dp * prefill_batch), 1.0, mode) * pre.interval_s
    ttft = wait + unqueued + first_round_share(load) * first_wave
    pre_mem = pre.memory_bytes / Mem.usable_bytes_per_gpu(hw)
    mem_frac = jnp.maximum(pre_mem, pool.memory_frac)
    mfu = (w_p * prefill.gpus * pool_mfu(pre, hw, prefill) + w_d * pool.gpus * pool.mfu) / gpus
    return assemble(ttft_s=ttft, tpot_s=pool.tpot_s, requests_per_s=rate, gpus=gpus, output_tokens=w.output_tokens,
                    slo=slo, memory_frac=mem_frac, valid=pre.valid * pool.valid, overload=overload,
                    decode_batch=pool.running, mfu=mfu, breakdown=pool.breakdown,
                    decode_memory_bytes=pool.memory_bytes, mode=mode, decode_gpus=w_d * pool.gpus,
                    prefill_gpus=w_p * prefill.gpus, attention_gpus=w_d * pool.attention_gpus,
                    ffn_gpus=w_d * pool.ffn_gpus, prefill_memory_bytes=pre.memory_bytes,
                    attention_memory_bytes=pool.attention_memory_bytes, ffn_memory_bytes=pool.ffn_memory_bytes)


def disagg_metrics(m: Model, hw: Hardware, cfg: DisaggConfig, w: Workload, slo: SLO, load: Load = SATURATION,
                   mode: Mode = HARD) -> Metrics:
    """Serving metrics of P/D disaggregation (see the module docstring)."""
    instances = jnp.where(cfg.decode_workers <= 0, 1.0, cfg.decode_workers)
    pool = plain_decode_pool(m, hw, cfg.decode, cfg.decode_batch, w, load, instances, mode)
    return compose_pd(m, hw, cfg.prefill, cfg.prefill_batch, cfg.prefill_workers, cfg.decode_workers, pool, w,
                      slo, load, mode, cfg.request_overhead_s)
