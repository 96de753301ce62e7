"""Aggregated serving with chunked prefill (Sarathi-style token budget).

Every iteration of a rank runs the decode tokens of its running requests plus up to `chunk` prompt
tokens of new ones. In steady state each request spends `output / a` decode iterations (a = tokens
accepted per step, 1 without speculation), so the ranks must prefill `batch × input × a / output`
prompt tokens per iteration on average to keep `batch` requests running; when that exceeds the chunk,
prefill limits the batch to `chunk × output / (input × a)`. Cached prefix tokens skip prefill compute
but hold KV and are attended to. The decode batch holds requests at every stage of their output, so
its KV lengths spread uniformly over [prefix + input, prefix + input + output].

Prefill is bursty, not spread: a scheduler admits waiting prompts into the next iteration up to the
chunk budget, so a few iterations carry `P` prefill tokens each and the others are decode-only.
`P` = the prompts admitted together (`admitted_prompts`: one prompt's chunk under saturation, open-loop
arrivals or a closed loop whose requests arrive apart; under a closed loop of N synchronised clients with
equal lengths, all of a rank's running requests arrive together and re-form the same groups every round) ×
min(input, chunk), at
least the spread-out mean and at most the chunk. Per `output / a` decode steps a rank runs
`k = batch × input / P` prefill-carrying iterations:

- `mixed_prefill = 1` (vLLM, TRT-LLM): they ride with the decodes, mean iteration
  = ((iters − k) × T(batch decodes) + k × T(batch decodes + P prefill)) / iters;
- `mixed_prefill = 0` (SGLang's default): prefill batches run apart and pause the decodes, time per
  decode step = T(batch decodes) + k / iters × T(P prefill alone).
Because expert weight traffic is concave in tokens, the bursty mean is below the spread one for MoE
models at small batch (dense models are nearly linear and see no difference).

TPOT = time per decode step / a. TTFT = `request_overhead_s` (HTTP, tokenisation, scheduling and
streaming the first token: a constant of the serving framework) + queueing + ceil(input / chunk)
prefill-carrying iterations (+ the wait behind the rest of its group when a synchronised closed loop
meets a scheduler that runs prefill apart, every round, or mixes it in, in the measured first round only;
when the requests arrive apart after the first round, only that round's wave, whose bursts pack whole groups
into the chunk budget: `queueing.wave_iterations`, `queueing.first_round_share`; and in the rounds after it
the decode iteration in flight when the request arrives: its predecessor finished as that iteration began,
and the other clients' requests keep the engine busy whenever the instance has more than one; with
TensorRT-LLM's attention-DP balancing on (`adp_balance_iters`), such a prompt is also held until every DP
rank has one or the timeout passes: `queueing.adp_balance_wait`, and with its batch waiting on until an
iteration would carry enough tokens: `queueing.batch_wait`; and it queues for the prefill budget as a
client of a closed network whose station is the instance's ranks, each prompt taking input / chunk of a
full-budget iteration: `queueing.closed_network_wait`).
Throughput = groups × batch × a / time per decode step, where a group is one DP rank of one instance
(× pp with pipeline parallelism, which keeps pp groups in flight); per GPU ÷ all GPUs of the instances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.cost import kernels as K
from jaxsim.cost import memory as Mem
from jaxsim.serve.metrics import Breakdown, Metrics, assemble
from jaxsim.serve.queueing import (
    SATURATION,
    Load,
    admitted_prompts,
    adp_balance_wait,
    batch_wait,
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


class AggConfig(eqx.Module):
    """Aggregated serving: `workers` identical instances of `deploy`; per attention-DP rank up to
    `batch` running requests and a prefill budget of `chunk` tokens per iteration.

    `mixed_prefill` (1 by default, Sarathi / vLLM / TRT-LLM; 0 for SGLang's default scheduler) says whether
    prefill chunks ride with the decodes or run as iterations of their own; `request_overhead_s` (0 by
    default) is the framework's fixed per-request time outside the iterations (see the module docstring);
    `adp_balance_iters` (0 by default: off) is TensorRT-LLM's attention-DP balancing timeout
    (`attention_dp_config: {enable_balance: true, timeout_iters: N}`; 50 when balancing is on and no timeout
    is given), which holds new prompts until every DP rank has one (`queueing.adp_balance_wait`);
    `recv_interval` (1 by default) is how many decode iterations the scheduler runs between polls for new
    requests (SGLang's `--scheduler-recv-interval`; it polls right after any prefill batch), so a request that
    arrives apart waits (K + 1) / 2 decode iterations on average instead of the one in flight;
    `batch_wait_iters` / `batch_wait_tokens` (0 by default: off) are TensorRT-LLM's batch waiting
    (`batch_wait_timeout_iters`, and `batch_wait_max_tokens_ratio` × `max_num_tokens`): new prompts are held
    until an iteration would carry that many tokens or the timeout passes (`queueing.batch_wait`).
    """

    deploy: Deployment
    batch: Array = _num(64.0)
    chunk: Array = _num(8192.0)
    workers: Array = _num(1.0)
    mixed_prefill: Array = _num(1.0)  # 1: prefill chunks share iterations with decodes; 0: run apart
    request_overhead_s: Array = _num(0.0)  # per-request time outside the engine iterations, added to TTFT
    adp_balance_iters: Array = _num(0.0)  # attention-DP context balancing timeout, iterations (0: off)
    recv_interval: Array = _num(1.0)  # decode iterations between the scheduler's polls for new requests
    batch_wait_iters: Array = _num(0.0)  # TRT-LLM batch waiting: timeout in iterations (0: off)
    batch_wait_tokens: Array = _num(0.0)  # ... and the tokens per iteration that end the wait early


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


def burst_batch(w: Workload, running: Array, prefill_tokens: Array, decode_share: ArrayLike) -> StepBatch:
    """An iteration that carries `prefill_tokens` prompt tokens (whole prompts or one chunk) beside
    `decode_share × running` decodes (1: mixed with the decodes, 0: a prefill iteration of its own)."""
    b = decode_batch(w, running * decode_share)
    return eqx.tree_at(lambda x: (x.prefill_tokens, x.prefill_context, x.prefill_sequences), b,
                       (prefill_tokens, w.prefix_tokens + 0.5 * w.input_tokens,
                        smooth.maximum(prefill_tokens / w.input_tokens, 1.0)))


def prefill_burst_tokens(w: Workload, running: Array, admitted: Array, iters_per_request: Array, chunk: Array,
                         mode: Mode) -> Array:
    """Prompt tokens a prefill-carrying iteration holds: `admitted` prompts' chunks, at least the spread-out
    mean `running × input / iterations per request`, at most the chunk."""
    group = admitted * smooth.minimum(w.input_tokens, chunk, mode)
    return smooth.minimum(smooth.maximum(group, running * w.input_tokens / iters_per_request, mode), chunk, mode)


def group_wave_s(load: Load, w: Workload, running: Array, iters_per_request: Array, chunk: Array, chunks: Array,
                 decode_share: ArrayLike, iteration: Callable[[StepBatch], Any], mode: Mode) -> Array:
    """Mean wait of a prompt whose rank's whole group arrives at once (a synchronised closed loop's first round)
    and is prefilled in bursts that pack the group into the chunk budget, back to back: (J − own) / 2 bursts
    (`queueing.wave_iterations`), each priced by `iteration` (anything with `.total_s`)."""
    tokens = prefill_burst_tokens(w, running, jnp.maximum(running, 1.0), iters_per_request, chunk, mode)
    burst = iteration(burst_batch(w, running, tokens, decode_share))
    return wave_iterations(load, running * w.input_tokens / tokens, chunks, mode) * burst.total_s


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
    mix = cfg.mixed_prefill

    def cycle(running: Array) -> tuple[Array, StepCost, StepCost, Array]:
        """(time per decode step, decode-only iteration, prefill-carrying iteration, prefill-carrying
        iterations per decode step)."""
        tokens = prefill_burst_tokens(w, running, admitted_prompts(load, running), iters_per_request, cfg.chunk,
                                      mode)
        dec = step_cost(m, hw, d, decode_batch(w, running), mode)
        burst = step_cost(m, hw, d, burst_batch(w, running, tokens, mix), mode)
        k = running * w.input_tokens / tokens / iters_per_request  # prefill-carrying iterations per decode step
        return dec.total_s + k * (burst.total_s - mix * dec.total_s), dec, burst, k

    full_s, _, _, _ = cycle(batch_cap)
    if load.kind == "saturation":
        running = batch_cap
    else:
        running = running_batch(load, batch_cap, groups, iters_per_request, full_s)
    step_s, dec, burst, k = cycle(running)
    # Per decode step: the decode-only iteration, less the share the bursts replace, plus the bursts.
    weights = (1.0 - mix * k, k)
    parts = [Breakdown.of_step(c) for c in (dec, burst)]
    breakdown = jax.tree.map(lambda x, y: weights[0] * x + weights[1] * y, *parts)
    flops = weights[0] * dec.flops + weights[1] * burst.flops
    mfu = flops * d.pp / step_s / K.peak_flop_per_s(hw, d.gemm_weight_bytes)

    tpot = step_s / a
    capacity = groups * batch_cap / iters_per_request / full_s
    requests_per_s = served_rate(load, groups * running / iters_per_request / step_s, capacity)
    chunks = smooth.ceil(w.input_tokens / cfg.chunk, mode)
    # A prefill server (one group) spends input/chunk of an iteration's budget on each prompt.
    wait, overload = queue_wait(load, groups * batch_cap, capacity, w.input_tokens / cfg.chunk * full_s, groups)
    # A synchronised group is prefilled back to back in the first round (weight `first_round_share`), and
    # every round when the groups re-form and prefill runs apart from decode.
    share = first_round_share(load)
    later_rounds = 0.0  # waits of requests after the first round (weight 1 − share)
    if load.kind == "concurrency" and not load.grouped:
        # Arrivals spread after the first round: only that round is a wave (its bursts pack whole groups into
        # the chunk budget), and later requests land in an iteration in flight (their predecessor finished at
        # its start, the others keep the engine busy) and wait for it to end before their prefill starts.
        wave = share * group_wave_s(load, w, running, iters_per_request, cfg.chunk, chunks, mix,
                                    lambda b: step_cost(m, hw, d, b, mode), mode)
        # With a scheduler that polls every K decode iterations, the predecessor's last iteration ends at a
        # uniform place in the K-iteration cycle: the request waits (K + 1) / 2 iterations on average (1 when K = 1).
        busy = jnp.clip(load.value / cfg.workers - 1.0, 0.0, 1.0)
        polls = 0.5 * (jnp.maximum(cfg.recv_interval, 1.0) + 1.0)
        in_flight = busy * polls * dec.total_s
        # Prompts that arrive apart still queue for the prefill budget when they come faster than it drains: an
        # instance's clients visit a station of dp × pp ranks whose iterations carry `chunk` prompt tokens, i.e.
        # input / chunk of a full-budget iteration per prompt, and spend the rest of each cycle decoding.
        full = step_cost(m, hw, d, burst_batch(w, running, cfg.chunk, mix), mode)
        clients = Load("concurrency", load.value / cfg.workers, load.rounds, arrivals=load.arrivals)
        queued = closed_network_wait(clients, d.dp * d.pp, full.total_s * w.input_tokens / cfg.chunk,
                                     iters_per_request * step_s + cfg.request_overhead_s, mode)
        later_rounds = in_flight + queued
    else:  # the bursts above already hold whole groups (or one prompt's chunk when nothing is synchronised)
        wave = wave_iterations(load, k * iters_per_request, chunks, mode) * ((1.0 - mix) + mix * share) * burst.total_s
    # Scheduler holds (attention-DP balancing, batch waiting) keep prompts that arrive apart, not the first wave.
    rank_rate = requests_per_s / (cfg.workers * d.dp)
    later_rounds = later_rounds + adp_balance_wait(load, cfg.adp_balance_iters * step_s, d.dp, rank_rate, running,
                                                   mode)
    later_rounds = later_rounds + batch_wait(load, cfg.batch_wait_iters * step_s, cfg.batch_wait_tokens,
                                             running * (1.0 + d.nextn), w.input_tokens, rank_rate, running, mode)
    ttft = cfg.request_overhead_s + chunks * burst.total_s + wave + wait + (1.0 - share) * later_rounds
    gpus = cfg.workers * d.gpus
    mem_frac = jnp.maximum(dec.memory_bytes, burst.memory_bytes) / Mem.usable_bytes_per_gpu(hw)
    return assemble(ttft_s=ttft, tpot_s=tpot, requests_per_s=requests_per_s, gpus=gpus, output_tokens=w.output_tokens,
                    slo=slo, memory_frac=mem_frac, valid=dec.valid * burst.valid, overload=overload,
                    decode_batch=running, mfu=mfu, breakdown=breakdown,
                    decode_memory_bytes=jnp.maximum(dec.memory_bytes, burst.memory_bytes), mode=mode)
