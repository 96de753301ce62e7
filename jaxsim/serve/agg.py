"""Aggregated serving with chunked prefill (Sarathi-style token budget).

Every iteration of a rank runs the decode tokens of its running requests plus up to `chunk` prompt
tokens of new ones. In steady state each request spends `output / a` decode iterations (a = tokens
accepted per step, 1 without speculation), so the ranks must prefill `batch × input × a / output`
prompt tokens per iteration to keep `batch` requests running; when that exceeds the chunk, prefill
limits the batch to `chunk × output / (input × a)`. Cached prefix tokens skip prefill compute but hold
KV and are attended to. The decode batch holds requests at every stage of their output, so its KV
lengths spread uniformly over [prefix + input, prefix + input + output].

TPOT = mean iteration latency / a (prefill chunks amortised over the iterations). TTFT = queueing +
ceil(input / chunk) iterations that each carry one chunk of min(input, chunk) prompt tokens besides the
decodes — such an iteration is longer than the mean one.
Throughput = groups × batch × a / iteration latency, where a group is one DP rank of one instance
(× pp with pipeline parallelism, which keeps pp groups in flight); per GPU ÷ all GPUs of the instances.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from jaxsim import smooth
from jaxsim.cost import kernels as K
from jaxsim.cost import memory as Mem
from jaxsim.serve.metrics import Breakdown, Metrics, assemble
from jaxsim.serve.queueing import SATURATION, Load, queue_wait, running_batch, served_rate
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO, Deployment, Hardware, Model, StepBatch, Workload, _num
from jaxsim.step import StepCost, step_cost


class AggConfig(eqx.Module):
    """Aggregated serving: `workers` identical instances of `deploy`; per attention-DP rank up to
    `batch` running requests and a prefill budget of `chunk` tokens per iteration."""

    deploy: Deployment
    batch: Array = _num(64.0)
    chunk: Array = _num(8192.0)
    workers: Array = _num(1.0)


def decode_batch(w: Workload, decode_requests: Array, context_grows: bool = True) -> StepBatch:
    """Decode requests whose KV spans prefix + input … prefix + input + output (mean and spread)."""
    start = w.prefix_tokens + w.input_tokens
    half = 0.5 * w.output_tokens if context_grows else jnp.zeros_like(w.output_tokens)
    return StepBatch(decode_requests=decode_requests, decode_context=start + half, decode_context_spread=half)


def mixed_batch(w: Workload, running: Array, iters_per_request: Array, chunk: Array, mode: Mode) -> StepBatch:
    """The mean iteration of a rank: `running` decodes plus the prompt tokens that keep them running
    (running × input / iterations per request), from prompts of `min(input, chunk)` tokens per chunk."""
    prefill = running * w.input_tokens / iters_per_request
    b = decode_batch(w, running)
    return eqx.tree_at(lambda x: (x.prefill_tokens, x.prefill_context, x.prefill_sequences), b,
                       (prefill, w.prefix_tokens + 0.5 * w.input_tokens,
                        prefill / smooth.minimum(w.input_tokens, chunk, mode)))


def chunk_batch(w: Workload, running: Array, chunk: Array, mode: Mode) -> StepBatch:
    """An iteration that carries one chunk (min(input, chunk) tokens) of a new prompt: what its TTFT sees."""
    b = decode_batch(w, running)
    return eqx.tree_at(lambda x: (x.prefill_tokens, x.prefill_context, x.prefill_sequences), b,
                       (smooth.minimum(w.input_tokens, chunk, mode), w.prefix_tokens + 0.5 * w.input_tokens,
                        jnp.ones_like(running)))


def pool_mfu(c: StepCost, hw: Hardware, d: Deployment) -> Array:
    """Model FLOP/s of one GPU over its dense peak at the GEMM weight precision (with PP, each stage's
    GPU sees `pp` micro-batches per iteration latency)."""
    return c.flops * d.pp / c.total_s / K.peak_flop_per_s(hw, d.gemm_weight_bytes)


def agg_metrics(m: Model, hw: Hardware, cfg: AggConfig, w: Workload, slo: SLO, load: Load = SATURATION,
                mode: Mode = HARD) -> Metrics:
    """Serving metrics of aggregated serving with chunked prefill (see the module docstring)."""
    d = cfg.deploy
    a = 1.0 + d.nextn * d.nextn_accept
    iters_per_request = w.output_tokens / a
    # Groups of `batch` requests that advance one token step per iteration latency: every DP rank of
    # every instance, times pp with PP (each stage holds one group's micro-batch at a time).
    groups = cfg.workers * d.dp * d.pp
    # Prefill caps the running batch: admissions per iteration × input ≤ chunk.
    batch_cap = smooth.minimum(cfg.batch, cfg.chunk * iters_per_request / w.input_tokens, mode)

    def iteration(running: Array) -> StepCost:
        return step_cost(m, hw, d, mixed_batch(w, running, iters_per_request, cfg.chunk, mode), mode)

    full = iteration(batch_cap)
    if load.kind == "saturation":
        running, cost = batch_cap, full
    else:
        running = running_batch(load, batch_cap, groups, iters_per_request, full.total_s)
        cost = iteration(running)
    with_chunk = step_cost(m, hw, d, chunk_batch(w, running, cfg.chunk, mode), mode)

    tpot = cost.total_s / a
    capacity = groups * batch_cap / iters_per_request / full.total_s
    requests_per_s = served_rate(load, groups * running / iters_per_request / cost.total_s, capacity)
    chunks = smooth.ceil(w.input_tokens / cfg.chunk, mode)
    # A prefill server (one group) spends input/chunk of an iteration's budget on each prompt.
    wait, overload = queue_wait(load, groups * batch_cap, capacity, w.input_tokens / cfg.chunk * full.total_s,
                                groups)
    ttft = chunks * with_chunk.total_s + wait
    gpus = cfg.workers * d.gpus
    mem_frac = jnp.maximum(cost.memory_bytes, with_chunk.memory_bytes) / Mem.usable_bytes_per_gpu(hw)
    return assemble(ttft_s=ttft, tpot_s=tpot, requests_per_s=requests_per_s, gpus=gpus, output_tokens=w.output_tokens,
                    slo=slo, memory_frac=mem_frac, valid=cost.valid, overload=overload, decode_batch=running,
                    mfu=pool_mfu(cost, hw, d), breakdown=Breakdown.of_step(cost),
                    decode_memory_bytes=cost.memory_bytes, mode=mode)
