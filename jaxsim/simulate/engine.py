"""Request-level, time-stepped simulation of one serving configuration: a pure scheduler step, scanned.

A serving unit holds a fixed-capacity slot array (`Settings.slots`) of running requests and reads its
requests from a fixed-size table in issue order (`traffic.generate`). One scheduler iteration:

1. jump the clock to the next arrival when nothing runs;
2. admit waiting requests FCFS into free slots while the running count stays ≤ the batch and the KV
   reserved for every admitted request (prefix + input + output tokens, its final size) fits the KV
   capacity — so held KV can never exceed it and nothing is ever preempted;
3. agg: give the prompts being prefilled up to `chunk` tokens FCFS (the partly prefilled prompts are
   always a contiguous run of the table, so this is a cumulative sum over a window of `Settings.window`
   requests), and decode one step (1 + accepted drafts tokens) for every request whose prompt finished
   in an earlier iteration; a prompt's last chunk yields its first token at the end of that iteration;
4. price the iteration with the step model (`step_cost`, or `afd_iteration` for AFD) on the batch it
   really ran — decode requests, their mean and spread of KV length, prefill tokens, their mean attended
   context and the number of prompts — and advance the clock by it;
5. record first-token and finish times; a closed-loop client issues its next request at the finish.

Scheduler options read from the configuration when it has them: `mixed_prefill = 0` (SGLang's default)
pauses the decodes in iterations that carry prompt tokens; `request_overhead_s` delays each request's
arrival at the scheduler (HTTP, tokenisation), so it counts in TTFT and end-to-end latency.

Which serving unit is simulated:
- agg and Agg+AFD: one group (one attention-DP rank of one instance, × PP stages in flight) with
  1/groups of the traffic — the groups are identical and run in lockstep, which is what the step model
  prices per rank — and system rates are scaled by the number of groups. Closed-loop clients per group
  are round(concurrency / groups), at least 1.
- P/D and P/D+AFD: the whole system. The prefill pool runs synchronised iterations of whole prompts
  (up to prefill_batch per rank over its ranks, FCFS; the busiest rank sets the time), each prompt's KV
  then moves to the decode pool (`disagg.kv_transfer_s`), where it waits for a slot and KV; the decode
  pool's ranks share the running requests evenly. The two pools keep their own clocks; each scan step
  advances the pool whose next iteration starts first. A rate-matched pool (`decode_workers = 0`) gets
  the analytic model's prefill instance count, rounded to whole prefill ranks.

Time is float32 with a compensated (Kahan) clock, so that 1e5 iterations do not drift.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from jaxsim.cost import memory as Mem
from jaxsim.serve.afd import AFDConfig, afd_gpus, afd_iteration
from jaxsim.serve.agg import AggConfig, decode_batch
from jaxsim.serve.disagg import DisaggConfig, kv_transfer_s, plain_decode_pool, prefill_step
from jaxsim.serve.estimate import Config
from jaxsim.serve.queueing import SATURATION
from jaxsim.simulate.traffic import Requests, Traffic, generate
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Deployment, Hardware, Model, StepBatch, Workload
from jaxsim.step import step_cost

SAMPLE_FIELDS = ("time_s", "kv_frac", "running", "waiting")
TIMELINE_FIELDS = ("pool", "start_s", "duration_s", "decode_requests", "prefill_tokens", "prefill_sequences",
                   "kv_frac", "decode_context", "decode_context_spread", "prefill_context")
POOL_AGG, POOL_PREFILL, POOL_DECODE = 0.0, 1.0, 2.0


class Settings(NamedTuple):
    """Static sizes of a simulation (one compilation per distinct value).

    Args:
        requests: R, rows of the request table per simulated unit.
        slots: S, the slot array; must be ≥ the batch of every configuration (agg: per group; P/D: the
            decode pool's ranks × decode batch).
        window: W, most requests admitted, or prefilled, or taken by one prefill iteration, per iteration.
        scan_length: iterations per `lax.scan`; scans repeat (a `while_loop`) until every configuration
            has finished or `max_iterations` is reached.
        max_iterations: upper bound on scheduler steps.
        samples: length of the time series (KV utilisation, running, waiting), one sample every
            `sample_every` iterations.
        timeline: the first `timeline` iterations are recorded in full (for the Chrome trace).
    """

    requests: int = 1000
    slots: int = 256
    window: int = 64
    scan_length: int = 256
    max_iterations: int = 200_000
    samples: int = 512
    sample_every: int = 64
    timeline: int = 1


DEFAULT_SETTINGS = Settings()


class Unit(eqx.Module):
    """Per-configuration constants of the simulated unit (see the module docstring)."""

    groups: Array  # identical groups the system holds (agg) or 1 (P/D)
    gpus: Array  # GPUs of the whole system
    slot_cap: Array  # running requests the unit may hold
    kv_cap: Array  # KV tokens the unit may hold
    chunk: Array  # prefill tokens per iteration (agg)
    tokens_per_step: Array  # tokens a decode request gains per iteration (1 + accepted drafts)
    clients: Array  # closed-loop clients of the unit
    decode_ranks: Array  # ranks sharing the decode batch (P/D)
    prefill_ranks: Array  # prefill ranks (P/D)
    prompt_cap: Array  # prompts per prefill iteration (P/D)
    mixed_prefill: Array  # agg: 1 = prefill chunks ride with the decodes; 0 = prefill iterations run apart, first
    overhead_s: Array  # per-request time between arrival and reaching the scheduler (HTTP, tokenisation)


class State(NamedTuple):
    t: Array  # unit (agg) or decode-pool clock, s
    t_c: Array  # Kahan compensation of t
    tp: Array  # prefill-pool clock (P/D), s
    p: Array  # next request to admit (int32)
    q: Array  # agg: first request not fully prefilled; P/D: next request to prefill
    q_done: Array  # prompt tokens of request q already prefilled (agg)
    nfin: Array  # finished requests
    it: Array  # iterations that did something
    done: Array  # bool: nothing left that can happen
    blocked: Array  # bool: a request arrived that cannot fit even an empty unit
    slot_idx: Array  # (S,) request index, −1 free
    slot_ctx: Array  # (S,) KV tokens held
    slot_gen: Array  # (S,) output tokens produced
    slot_out: Array  # (S,) output tokens wanted
    slot_res: Array  # (S,) KV tokens reserved
    slot_pre: Array  # (S,) cached prefix tokens
    slot_len: Array  # (S,) prefix + input tokens (prompt KV once prefilled)
    arrival: Array  # (R + pad,) per request
    admit: Array  # service start: agg slot admission, P/D prefill start
    first: Array  # first token
    finish: Array
    ready: Array  # P/D: KV arrived at the decode pool
    finish_log: Array  # (R + pad,) finish times in finish order
    area_sys: Array  # ∫ requests in the system dt
    area_queue: Array  # ∫ requests waiting for service dt
    area_kv: Array  # ∫ KV tokens held dt
    busy_s: Array  # time the unit (decode pool) spent in iterations
    prefill_busy_s: Array
    request_iterations: Array  # Σ over iterations of requests advanced (decoded or prefilled)
    samples: Array  # (T, len(SAMPLE_FIELDS))
    timeline: Array  # (L, len(TIMELINE_FIELDS))


class SimResult(eqx.Module):
    """Raw outcome of one simulated unit (per-request arrays have length R, in issue order)."""

    arrival_s: Array
    admit_s: Array
    first_token_s: Array
    finish_s: Array
    prefix: Array
    input: Array
    output: Array
    count: Array  # requests that exist in the table
    finished: Array  # requests finished
    finish_log: Array  # finish times in finish order (R,), inf after `finished`
    end_s: Array
    area_sys: Array
    area_queue: Array
    area_kv: Array
    busy_s: Array
    prefill_busy_s: Array
    request_iterations: Array
    iterations: Array
    blocked: Array
    samples: Array
    timeline: Array
    unit: Unit


# --------------------------------------------------------------------------------------------------
# Per-configuration constants and iteration costs
# --------------------------------------------------------------------------------------------------


def _kv_tokens_per_rank(m: Model, hw: Hardware, d: Deployment, batch: Array, chunk: Array, afd: bool) -> Array:
    """KV tokens one attention-DP rank can hold beside weights and activations (≤ 0: nothing fits)."""
    if not afd:
        return Mem.kv_capacity_tokens(m, hw, d, batch + chunk, batch)
    # AFD attention GPUs hold no routed experts (as in afd_iteration: activations without local experts).
    no_experts = eqx.tree_at(lambda x: x.ep, d, jnp.maximum(d.ep, 1e9))
    free = (Mem.usable_bytes_per_gpu(hw) - Mem.attention_side_weight_bytes_per_gpu(m, d)
            - Mem.activation_bytes_per_gpu(m, no_experts, batch + chunk, batch))
    return free / Mem.kv_bytes_per_token_gpu(m, d)


def _tokens_per_step(d: Deployment) -> Array:
    return 1.0 + d.nextn * d.nextn_accept


def unit_of(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, mode: Mode = HARD) -> Unit:
    """The simulated unit of a configuration (see the module docstring)."""
    one = jnp.ones_like(w.input_tokens)
    override = traffic.kv_capacity_tokens

    def kv(per_rank: Array) -> Array:
        return jnp.where(override > 0, override, per_rank)

    if isinstance(cfg, AggConfig | AFDConfig) and (isinstance(cfg, AggConfig) or cfg.base == "agg"):
        d = cfg.deploy
        afd = isinstance(cfg, AFDConfig)
        groups = cfg.workers * d.dp * (1.0 if afd else d.pp)
        gpus = cfg.workers * (sum(afd_gpus(d)) if afd else d.gpus)
        return Unit(groups=groups * one, gpus=gpus * one, slot_cap=cfg.batch * one,
                    kv_cap=kv(_kv_tokens_per_rank(m, hw, d, cfg.batch, cfg.chunk, afd)) * one,
                    chunk=cfg.chunk * one, tokens_per_step=_tokens_per_step(d) * one,
                    clients=jnp.maximum(jnp.round(traffic.concurrency / groups), 1.0) * one,
                    decode_ranks=one, prefill_ranks=one, prompt_cap=one,
                    mixed_prefill=jnp.asarray(getattr(cfg, "mixed_prefill", 1.0)) * one,
                    overhead_s=jnp.asarray(getattr(cfg, "request_overhead_s", 0.0)) * one)
    # P/D (plain or AFD decode pool): the whole system.
    if isinstance(cfg, DisaggConfig):
        dec, batch, pre, pre_batch = cfg.decode, cfg.decode_batch, cfg.prefill, cfg.prefill_batch
        workers_d, workers_p = cfg.decode_workers, cfg.prefill_workers
        decode_ranks_per_instance = dec.dp * dec.pp
        instance_gpus = dec.gpus
        capacity = plain_decode_pool(m, hw, dec, batch, w, SATURATION, one, mode).capacity_rps
        afd = False
    else:
        dec, batch, pre, pre_batch = cfg.deploy, cfg.batch, cfg.prefill, cfg.prefill_batch
        workers_d, workers_p = cfg.workers, cfg.prefill_workers
        decode_ranks_per_instance = dec.dp
        instance_gpus = sum(afd_gpus(dec))
        it = afd_iteration(m, hw, dec, cfg.micro_batches, decode_batch(w, batch), mode)
        capacity = dec.dp * batch / (w.output_tokens / _tokens_per_step(dec)) / it.total_s
        afd = True
    matched = workers_d <= 0
    inst_d = jnp.where(matched, 1.0, workers_d)
    r_p = pre.dp * pre_batch / prefill_step(m, hw, pre, w, pre_batch, mode).interval_s
    inst_p = jnp.where(matched, capacity / r_p, workers_p)
    prefill_ranks = jnp.maximum(jnp.round(inst_p * pre.dp), 1.0)
    decode_ranks = inst_d * decode_ranks_per_instance
    gpus = prefill_ranks / pre.dp * pre.gpus + inst_d * instance_gpus
    return Unit(groups=one, gpus=gpus * one, slot_cap=decode_ranks * batch * one,
                kv_cap=decode_ranks * kv(_kv_tokens_per_rank(m, hw, dec, batch, jnp.zeros_like(batch), afd)) * one,
                chunk=0.0 * one, tokens_per_step=_tokens_per_step(dec) * one,
                clients=jnp.maximum(jnp.round(traffic.concurrency), 1.0) * one, decode_ranks=decode_ranks * one,
                prefill_ranks=prefill_ranks * one, prompt_cap=prefill_ranks * pre_batch * one, mixed_prefill=one,
                overhead_s=jnp.asarray(getattr(cfg, "request_overhead_s", 0.0)) * one)


def iteration_s(m: Model, hw: Hardware, cfg: Config, batch: StepBatch, mode: Mode = HARD) -> Array:
    """Latency of one iteration of the unit's running pool (agg group or decode pool rank) for `batch`."""
    if isinstance(cfg, AggConfig):
        return step_cost(m, hw, cfg.deploy, batch, mode).total_s
    if isinstance(cfg, DisaggConfig):
        return step_cost(m, hw, cfg.decode, batch, mode).total_s
    return afd_iteration(m, hw, cfg.deploy, cfg.micro_batches, batch, mode).total_s


def _is_pd(cfg: Config) -> bool:
    return isinstance(cfg, DisaggConfig) or (isinstance(cfg, AFDConfig) and cfg.base == "disagg")


def _prefill_deploy(cfg: Config) -> Deployment:
    return cfg.prefill


def _decode_instance_gpus(cfg: Config) -> Array:
    if isinstance(cfg, DisaggConfig):
        return cfg.decode.gpus
    return sum(afd_gpus(cfg.deploy))


# --------------------------------------------------------------------------------------------------
# The scheduler step
# --------------------------------------------------------------------------------------------------


class _Table(NamedTuple):
    """The request table padded past its end (arrival inf, lengths 1) so windows never run off it."""

    arrival_s: Array
    prefix: Array
    input: Array
    output: Array
    need: Array  # KV reserved at admission: prefix + input + output
    count: Array


class _Ctx(NamedTuple):
    """What every step reads: the unit, the padded request table, and the clients' ramp."""

    unit: Unit
    tab: _Table
    table_arrival: Array  # (R,) open-loop arrivals (inf beyond count) for searchsorted
    closed: bool
    ramp_s: Array
    log_offset: int


def _take(x: Array, idx: Array) -> Array:
    return jnp.take(x, jnp.clip(idx, 0, x.shape[0] - 1), axis=0)


def _admit(ok: Array, active: Array, slot_cap: Array, p: Array, slot_idx: Array, S: int,
           W: int) -> tuple[Array, Array, Array, Array, Array, Array]:
    """FCFS admission: the leading run of admissible requests of the window (`ok`) take the free slots in
    slot order. Returns (admitted mask over the window, count, new queue front, newly filled slots, each
    new slot's window position, request index per slot)."""
    adm = jnp.cumprod(ok.astype(jnp.int32)).astype(bool)
    n_adm = adm.sum()
    free_mask = ~active & (jnp.arange(S) < slot_cap)
    rank = jnp.cumsum(free_mask) - 1
    new = free_mask & (rank < n_adm)
    return adm, n_adm, p + n_adm, new, jnp.clip(rank, 0, W - 1), jnp.where(new, p + rank, slot_idx)


def _window(x: Array, start: Array, n: int) -> Array:
    """x[start : start + n] (`x` is padded so that the window never runs off its end)."""
    return jax.lax.dynamic_slice_in_dim(x, start, n)


def _arrivals(st: State, cx: _Ctx, start: Array, n: int) -> tuple[Array, Array]:
    """(arrival time, issued) of requests start … start + n − 1 (closed loop: issued at finishes)."""
    idx = start + jnp.arange(n, dtype=jnp.int32)
    exists = idx < cx.tab.count
    if not cx.closed:
        return jnp.where(exists, _window(cx.tab.arrival_s, start, n), jnp.inf), exists
    n_cl = cx.unit.clients
    idx_f = idx.astype(jnp.float32)
    first_round = idx_f < n_cl
    ramp = jnp.where(cx.ramp_s > 0, cx.ramp_s * idx_f / n_cl, 0.0)
    # finish_log holds finish k at k + LOG_OFFSET, so the window of follow-ups starts at ≥ 0 whenever any
    # of its requests is a follow-up (n ≤ LOG_OFFSET).
    follow = _window(st.finish_log, start - n_cl.astype(jnp.int32) + cx.log_offset, n)
    issued = exists & (first_round | (idx_f - n_cl < st.nfin.astype(jnp.float32)))
    return jnp.where(issued, jnp.where(first_round, ramp, follow), jnp.inf), issued


def _arrived_by(cx: _Ctx, t: Array, nfin: Array) -> Array:
    """Requests that have arrived by time t (float)."""
    if not cx.closed:
        return jnp.searchsorted(cx.table_arrival, t, side="right", method="scan_unrolled").astype(jnp.float32)
    n_cl = cx.unit.clients
    ramped = jnp.where(cx.ramp_s > 0, jnp.clip(jnp.floor(t * n_cl / jnp.maximum(cx.ramp_s, 1e-30)) + 1.0, 0.0, n_cl),
                       n_cl)
    return jnp.minimum(ramped + nfin.astype(jnp.float32), cx.tab.count.astype(jnp.float32))


def _kahan(t: Array, c: Array, dt: Array) -> tuple[Array, Array]:
    y = dt - c
    tn = t + y
    return tn, (tn - t) - y


def _decode_stats(mask: Array, ctx: Array) -> tuple[Array, Array, Array]:
    """(count, mean context, uniform-equivalent half-width √3·σ) of the masked slots."""
    n = mask.sum().astype(jnp.float32)
    safe = jnp.maximum(n, 1.0)
    mean = jnp.where(mask, ctx, 0.0).sum() / safe
    var = jnp.where(mask, (ctx - mean) ** 2, 0.0).sum() / safe
    return n, mean, jnp.sqrt(3.0 * jnp.maximum(var, 0.0))


def _scatter(x: Array, idx: Array, mask: Array, value: Array) -> Array:
    """x[idx] = value where mask (out-of-range writes dropped)."""
    return x.at[jnp.where(mask, idx, x.shape[0])].set(value, mode="drop")


def _write_window(x: Array, start: Array, mask: Array, value: Array) -> Array:
    """x[start + j] = value[j] where mask[j], for a contiguous window (one dynamic slice, cheap under vmap;
    `x` is padded so that the window never runs off its end)."""
    n = mask.shape[0]
    block = jax.lax.dynamic_slice_in_dim(x, start, n)
    return jax.lax.dynamic_update_slice_in_dim(x, jnp.where(mask, value, block), start, 0)


def _record(st: State, settings: Settings, pool: Array, t0: Array, dt: Array, n_dec: Array,
            pre_tok: Array, seqs: Array, kv_frac: Array, running: Array, waiting: Array, progress: Array,
            ctx: tuple[Array, Array, Array]) -> tuple[Array, Array]:
    """Append to the time series (every `sample_every` iterations) and the timeline (first iterations)."""
    T, every = settings.samples, settings.sample_every
    row = jnp.stack([t0 + dt, kv_frac, running, waiting]).astype(jnp.float32)
    k = st.it // every
    take_sample = progress & (st.it % every == 0) & (k < T)
    samples = st.samples.at[jnp.where(take_sample, k, T)].set(row, mode="drop")
    L = settings.timeline
    line = jnp.stack([jnp.asarray(pool, jnp.float32) + 0 * t0, t0, dt, n_dec, pre_tok, seqs, kv_frac, *ctx])
    line = line.astype(jnp.float32)
    timeline = st.timeline.at[jnp.where(progress & (st.it < L), st.it, L)].set(line, mode="drop")
    return samples, timeline


def _agg_step(m: Model, hw: Hardware, cfg: Config, cx: _Ctx, settings: Settings, mode: Mode, st: State) -> State:
    S, W = settings.slots, settings.window
    u, tab = cx.unit, cx.tab
    j = jnp.arange(W, dtype=jnp.int32)
    active = st.slot_idx >= 0
    n_active = active.sum()
    head_t, head_issued = _arrivals(st, cx, st.p, 1)
    head_t, head_issued = head_t[0], head_issued[0]
    t0 = jnp.where((n_active == 0) & head_issued, jnp.maximum(st.t, head_t + u.overhead_s), st.t)

    # ---- admission: FCFS into free slots while the batch and the reserved KV allow ----
    pidx = st.p + j
    arr_w, iss_w = _arrivals(st, cx, st.p, W)
    need_w = _window(tab.need, st.p, W)
    kv_free = u.kv_cap - jnp.where(active, st.slot_res, 0.0).sum()
    ok = iss_w & (arr_w + u.overhead_s <= t0) & (j < u.slot_cap - n_active) & (jnp.cumsum(need_w) <= kv_free)
    adm, n_adm, p1, new, r, idx = _admit(ok, active, u.slot_cap, st.p, st.slot_idx, S, W)
    # One gather of the admitted requests' (prefix, prompt, output, reserved) into their slots.
    rows = jnp.stack([_window(tab.prefix, st.p, W), _window(tab.prefix + tab.input, st.p, W),
                      _window(tab.output, st.p, W), need_w], axis=1)[r]
    ctx = jnp.where(new, rows[:, 0], st.slot_ctx)
    gen = jnp.where(new, 0.0, st.slot_gen)
    out = jnp.where(new, rows[:, 2], st.slot_out)
    res = jnp.where(new, rows[:, 3], st.slot_res)
    spre = jnp.where(new, rows[:, 0], st.slot_pre)
    slen = jnp.where(new, rows[:, 1], st.slot_len)

    # ---- chunked prefill: FCFS over the contiguous run [q, p1) ----
    qidx = st.q + j
    inflight = qidx < p1
    inp_q, pre_q = _window(tab.input, st.q, W), _window(tab.prefix, st.q, W)
    done_q = jnp.where(j == 0, st.q_done, 0.0)
    rem = jnp.where(inflight, inp_q - done_q, 0.0)
    chunk = jnp.clip(u.chunk - (jnp.cumsum(rem) - rem), 0.0, rem)
    comp = inflight & (chunk >= rem)
    n_comp = jnp.cumprod(comp.astype(jnp.int32)).sum()
    q1 = st.q + n_comp
    q_done1 = jnp.where(n_comp < W, (done_q + chunk)[jnp.minimum(n_comp, W - 1)], 0.0)
    pre_tok = chunk.sum()
    seqs = (chunk > 0).sum().astype(jnp.float32)
    pre_ctx = (chunk * (pre_q + done_q + 0.5 * chunk)).sum() / jnp.maximum(pre_tok, 1.0)

    # ---- decode: requests whose prompt finished in an earlier iteration ----
    # A scheduler that runs prefill apart (mixed_prefill = 0) pauses the decodes while prompts wait.
    dec = active & (st.slot_idx < st.q) & ((u.mixed_prefill > 0.5) | (pre_tok == 0))
    n_dec, ctx_mean, ctx_spread = _decode_stats(dec, st.slot_ctx)
    batch = StepBatch(decode_requests=n_dec, decode_context=ctx_mean, decode_context_spread=ctx_spread,
                      prefill_tokens=pre_tok, prefill_context=pre_ctx, prefill_sequences=seqs)
    work = (n_dec + pre_tok) > 0
    dt = jnp.where(work, iteration_s(m, hw, cfg, batch, mode), 0.0)
    t1, t_c = _kahan(t0, st.t_c, dt)

    # ---- slot updates ----
    # Prompts in flight hold their prefix plus what is prefilled: all of it below the new front q1, the
    # front's q_done1 tokens, nothing yet behind it.
    completing = (idx >= st.q) & (idx < q1)
    ctx = jnp.where(idx >= st.q, jnp.where(idx < q1, slen, spre + jnp.where(idx == q1, q_done1, 0.0)), ctx)
    a = u.tokens_per_step
    gen = jnp.where(completing, 1.0, jnp.where(dec, gen + a, gen))
    ctx = jnp.where(dec, ctx + a, ctx)
    fin = (dec | completing) & (gen >= out - 1e-3) & (idx >= 0)
    return _finish(st, cx, settings, t0, t1, t_c, dt, idx, ctx, gen, out, res, spre, slen, fin, p1, q1, q_done1,
                   n_adm, adm,
                   pidx, arr_w, qidx, n_comp, n_dec, pre_tok, seqs, head_issued & (head_t + u.overhead_s <= t0),
                   (ctx_mean, ctx_spread, pre_ctx))


def _finish(st: State, cx: _Ctx, settings: Settings, t0: Array, t1: Array, t_c: Array, dt: Array, idx: Array,
            ctx: Array, gen: Array, out: Array, res: Array, spre: Array, slen: Array, fin: Array, p1: Array,
            q1: Array, q_done1: Array,
            n_adm: Array, adm: Array, pidx: Array, arr_w: Array, qidx: Array, n_comp: Array, n_dec: Array,
            pre_tok: Array, seqs: Array, head_waiting: Array, ctx_stats: tuple[Array, Array, Array]) -> State:
    """Agg: records, frees finished slots, accumulates areas and samples."""
    W = settings.window
    j = jnp.arange(W)
    u = cx.unit
    arrival = _write_window(st.arrival, st.p, adm, arr_w)
    admit = _write_window(st.admit, st.p, adm, t0)
    first = _write_window(st.first, st.q, j < n_comp, t1)
    finish = _scatter(st.finish, idx, fin, t1)
    n_fin = fin.sum()
    finish_log = _write_window(st.finish_log, st.nfin + cx.log_offset, jnp.arange(settings.slots) < n_fin, t1)
    idx = jnp.where(fin, -1, idx)
    ctx = jnp.where(fin, 0.0, ctx)
    res = jnp.where(fin, 0.0, res)
    progress = (n_adm > 0) | (dt > 0)

    a_prev = _arrived_by(cx, st.t, st.nfin)
    a0 = _arrived_by(cx, t0, st.nfin)
    a1 = _arrived_by(cx, t1, st.nfin)
    nf = st.nfin.astype(jnp.float32)
    gap = t0 - st.t
    area_sys = st.area_sys + gap * jnp.maximum(a_prev - nf, 0.0) + dt * (0.5 * (a0 + a1) - nf)
    area_q = st.area_queue + gap * jnp.maximum(a_prev - st.p, 0.0) + dt * jnp.maximum(0.5 * (a0 + a1) - p1, 0.0)
    held_before = jnp.where(st.slot_idx >= 0, st.slot_ctx, 0.0).sum()
    kv_frac = jnp.where(idx >= 0, ctx, 0.0).sum() / jnp.maximum(u.kv_cap, 1.0)
    running = (idx >= 0).sum().astype(jnp.float32)
    samples, timeline = _record(st, settings, jnp.float32(POOL_AGG), t0, dt, n_dec, pre_tok, seqs, kv_frac, running,
                                jnp.maximum(a1 - p1, 0.0), progress, ctx_stats)
    return State(
        t=t1, t_c=t_c, tp=st.tp, p=p1, q=q1, q_done=q_done1, nfin=st.nfin + n_fin, it=st.it + progress,
        done=st.done | ~progress, blocked=st.blocked | (~progress & head_waiting),
        slot_idx=idx, slot_ctx=ctx, slot_gen=gen, slot_out=out, slot_res=res, slot_pre=spre, slot_len=slen,
        arrival=arrival, admit=admit, first=first, finish=finish, ready=st.ready, finish_log=finish_log,
        area_sys=area_sys, area_queue=area_q, area_kv=st.area_kv + dt * held_before, busy_s=st.busy_s + dt,
        prefill_busy_s=st.prefill_busy_s, request_iterations=st.request_iterations + n_dec + seqs,
        samples=samples, timeline=timeline)


def _pd_step(m: Model, hw: Hardware, cfg: Config, cx: _Ctx, settings: Settings, mode: Mode, st: State) -> State:
    """P/D: advance whichever pool starts its next iteration first (see the module docstring)."""
    S, W = settings.slots, settings.window
    u, tab = cx.unit, cx.tab
    j = jnp.arange(W, dtype=jnp.int32)
    inf = jnp.float32(jnp.inf)
    active = st.slot_idx >= 0
    n_active = active.sum()
    need = tab.need

    # ---- next starts ----
    q_t, q_iss = _arrivals(st, cx, st.q, 1)
    pf_start = jnp.where(q_iss[0], jnp.maximum(st.tp, q_t[0] + u.overhead_s), inf)
    head_ready = _take(st.ready, st.p)
    head_fits = (_take(need, st.p) <= u.kv_cap) & (u.slot_cap >= 1)
    dc_start = jnp.where(n_active > 0, st.t, jnp.where((st.p < st.q) & head_fits, jnp.maximum(st.t, head_ready), inf))
    do_pf = pf_start < dc_start
    do_dc = ~do_pf & jnp.isfinite(dc_start)

    # ---- prefill pool: whole prompts, FCFS ----
    arr_q, iss_q = _arrivals(st, cx, st.q, W)
    sel = iss_q & (arr_q + u.overhead_s <= pf_start) & (j < u.prompt_cap)
    sel = jnp.cumprod(sel.astype(jnp.int32)).astype(bool) & do_pf
    kp = sel.sum().astype(jnp.float32)
    inp_q, pre_q = _window(tab.input, st.q, W), _window(tab.prefix, st.q, W)
    per_rank = jnp.ceil(kp / u.prefill_ranks)
    mean_inp = jnp.where(sel, inp_q, 0.0).sum() / jnp.maximum(kp, 1.0)
    mean_ctx = jnp.where(sel, pre_q + 0.5 * inp_q, 0.0).sum() / jnp.maximum(kp, 1.0)
    pre = _prefill_deploy(cfg)
    pcost = step_cost(m, hw, pre, StepBatch(prefill_tokens=per_rank * mean_inp, prefill_context=mean_ctx,
                                            prefill_sequences=per_rank), mode)
    p_total = jnp.where(kp > 0, pcost.total_s, 0.0)
    p_interval = jnp.where(kp > 0, pcost.interval_s, 0.0)
    transfer = kv_transfer_s(m, hw, pre, _decode_instance_gpus(cfg),
                             Workload(prefix_tokens=pre_q, input_tokens=inp_q, output_tokens=jnp.ones_like(inp_q)))
    ready_q = pf_start + p_total + transfer
    arrival = _write_window(st.arrival, st.q, sel, arr_q)
    admit = _write_window(st.admit, st.q, sel, pf_start)
    first = _write_window(st.first, st.q, sel, ready_q)
    ready = _write_window(st.ready, st.q, sel, ready_q)
    tp1 = jnp.where(do_pf, pf_start + p_interval, st.tp)
    q1 = st.q + sel.sum()

    # ---- decode pool: admit transferred requests, decode one step ----
    t0 = jnp.where(do_dc, dc_start, st.t)
    pidx = st.p + j
    ready_w = _window(st.ready, st.p, W)
    need_w = _window(need, st.p, W)
    kv_free = u.kv_cap - jnp.where(active, st.slot_res, 0.0).sum()
    ok = (pidx < st.q) & (ready_w <= t0) & (j < u.slot_cap - n_active) & (jnp.cumsum(need_w) <= kv_free) & do_dc
    _, n_adm, p1, new, r, idx = _admit(ok, active, u.slot_cap, st.p, st.slot_idx, S, W)
    rows = jnp.stack([_window(tab.prefix + tab.input, st.p, W), _window(tab.output, st.p, W), need_w], axis=1)[r]
    ctx = jnp.where(new, rows[:, 0], st.slot_ctx)
    gen = jnp.where(new, 1.0, st.slot_gen)
    out = jnp.where(new, rows[:, 1], st.slot_out)
    res = jnp.where(new, rows[:, 2], st.slot_res)
    one_token = new & (out <= 1.0 + 1e-3)  # the prefill's token was the whole answer
    dec = (idx >= 0) & ~one_token & do_dc
    n_dec, ctx_mean, ctx_spread = _decode_stats(dec, ctx)
    batch = StepBatch(decode_requests=n_dec / u.decode_ranks, decode_context=ctx_mean,
                      decode_context_spread=ctx_spread)
    dt = jnp.where(n_dec > 0, iteration_s(m, hw, cfg, batch, mode), 0.0)
    t1, t_c = _kahan(t0, st.t_c, dt)
    a = u.tokens_per_step
    gen = jnp.where(dec, gen + a, gen)
    ctx = jnp.where(dec, ctx + a, ctx)
    fin = ((dec & (gen >= out - 1e-3)) | one_token) & do_dc
    finish = _scatter(st.finish, idx, fin, t1)
    n_fin = fin.sum()
    finish_log = _write_window(st.finish_log, st.nfin + cx.log_offset, jnp.arange(S) < n_fin, t1)
    idx = jnp.where(fin, -1, idx)
    ctx = jnp.where(fin, 0.0, ctx)
    res = jnp.where(fin, 0.0, res)

    progress = do_pf | (do_dc & ((n_adm > 0) | (dt > 0)))
    a_prev = _arrived_by(cx, st.t, st.nfin)
    a0 = _arrived_by(cx, t0, st.nfin)
    a1 = _arrived_by(cx, t1, st.nfin)
    nf = st.nfin.astype(jnp.float32)
    gap = jnp.where(do_dc, t0 - st.t, 0.0)
    dtd = jnp.where(do_dc, dt, 0.0)
    area_sys = st.area_sys + gap * jnp.maximum(a_prev - nf, 0.0) + dtd * (0.5 * (a0 + a1) - nf)
    area_q = st.area_queue + gap * jnp.maximum(a_prev - st.q, 0.0) + dtd * jnp.maximum(0.5 * (a0 + a1) - q1, 0.0)
    held_before = jnp.where(active, st.slot_ctx, 0.0).sum()
    kv_frac = jnp.where(idx >= 0, ctx, 0.0).sum() / jnp.maximum(u.kv_cap, 1.0)
    running = (idx >= 0).sum().astype(jnp.float32)
    pool = jnp.where(do_pf, POOL_PREFILL, POOL_DECODE)
    start = jnp.where(do_pf, pf_start, t0)
    dur = jnp.where(do_pf, p_total, dt)
    samples, timeline = _record(st, settings, pool, start, dur, jnp.where(do_pf, 0.0, n_dec),
                                jnp.where(do_pf, per_rank * mean_inp, 0.0), jnp.where(do_pf, kp, 0.0), kv_frac,
                                running, jnp.maximum(a1 - q1, 0.0), progress,
                                (jnp.where(do_pf, 0.0, ctx_mean), jnp.where(do_pf, 0.0, ctx_spread),
                                 jnp.where(do_pf, mean_ctx, 0.0)))
    nothing = ~jnp.isfinite(pf_start) & ~jnp.isfinite(dc_start)
    blocked_now = nothing & (st.p < st.q) & ~head_fits
    return State(
        t=jnp.where(do_dc, t1, st.t), t_c=jnp.where(do_dc, t_c, st.t_c), tp=tp1, p=p1, q=q1, q_done=st.q_done,
        nfin=st.nfin + n_fin, it=st.it + progress, done=st.done | nothing, blocked=st.blocked | blocked_now,
        slot_idx=jnp.where(do_dc, idx, st.slot_idx), slot_ctx=jnp.where(do_dc, ctx, st.slot_ctx),
        slot_gen=jnp.where(do_dc, gen, st.slot_gen), slot_out=jnp.where(do_dc, out, st.slot_out),
        slot_res=jnp.where(do_dc, res, st.slot_res), slot_pre=st.slot_pre, slot_len=st.slot_len,
        arrival=arrival, admit=admit, first=first, finish=finish, ready=ready, finish_log=finish_log,
        area_sys=area_sys, area_queue=area_q, area_kv=st.area_kv + dtd * held_before,
        busy_s=st.busy_s + dtd, prefill_busy_s=st.prefill_busy_s + jnp.where(do_pf, p_interval, 0.0),
        request_iterations=st.request_iterations + jnp.where(do_pf, kp, n_dec),
        samples=samples, timeline=timeline)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def simulate(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, key: Array,
             settings: Settings = DEFAULT_SETTINGS, mode: Mode = HARD) -> SimResult:
    """Simulate one configuration request by request (pure; jit it, or use `simulate_batch` for many).

    Args:
        m, hw, cfg: model, GPU system and serving configuration (any architecture).
        w: the nominal workload: lengths for `traffic.lengths` fixed / uniform / lognormal, and the mean
            request that sizes a rate-matched P/D prefill pool.
        traffic: arrivals and length distribution (whole system; see `Traffic`).
        key: PRNG key; the same key gives the same result.
        settings: static sizes (`Settings`).
    """
    unit = unit_of(m, hw, cfg, w, traffic, mode)
    tab = generate(key, traffic, w, settings.requests, unit.groups, m.max_context)
    return run_requests(m, hw, cfg, w, traffic, tab, settings, mode)


def run_requests(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, tab: Requests,
                 settings: Settings = DEFAULT_SETTINGS, mode: Mode = HARD) -> SimResult:
    """`simulate` on a given request table (from `generate`); of `traffic` only the closed / open kind,
    the concurrency, ramp and KV override are read."""
    R, S, W = settings.requests, settings.slots, settings.window
    unit = unit_of(m, hw, cfg, w, traffic, mode)
    pad = max(S, W) + 1
    f32 = jnp.float32

    def padded(x: Array, fill: float) -> Array:
        return jnp.concatenate([x.astype(f32), jnp.full((pad,), fill, f32)])

    ptab = _Table(arrival_s=padded(tab.arrival_s, jnp.inf), prefix=padded(tab.prefix, 0.0),
                  input=padded(tab.input, 1.0), output=padded(tab.output, 1.0),
                  need=padded(tab.prefix + tab.input + tab.output, 3.0), count=tab.count)
    closed = traffic.arrival == "closed"
    cx = _Ctx(unit=unit, tab=ptab, table_arrival=tab.arrival_s.astype(f32), closed=closed,
              ramp_s=traffic.ramp_s.astype(f32), log_offset=W)
    nan_r = jnp.full((R + pad,), jnp.nan, f32)
    zero = jnp.zeros((), f32)
    i0 = jnp.zeros((), jnp.int32)
    st = State(t=zero, t_c=zero, tp=zero, p=i0, q=i0, q_done=zero, nfin=i0, it=i0, done=jnp.zeros((), bool),
               blocked=jnp.zeros((), bool), slot_idx=jnp.full((S,), -1, jnp.int32), slot_ctx=jnp.zeros((S,), f32),
               slot_gen=jnp.zeros((S,), f32), slot_out=jnp.zeros((S,), f32), slot_res=jnp.zeros((S,), f32),
               slot_pre=jnp.zeros((S,), f32), slot_len=jnp.zeros((S,), f32),
               arrival=nan_r, admit=nan_r, first=nan_r, finish=nan_r, ready=jnp.full((R + pad,), jnp.inf, f32),
               finish_log=jnp.full((W + R + pad,), jnp.inf, f32), area_sys=zero, area_queue=zero, area_kv=zero,
               busy_s=zero, prefill_busy_s=zero, request_iterations=zero,
               samples=jnp.full((settings.samples, len(SAMPLE_FIELDS)), jnp.nan, f32),
               timeline=jnp.full((max(settings.timeline, 1), len(TIMELINE_FIELDS)), jnp.nan, f32))
    step_fn = _pd_step if _is_pd(cfg) else _agg_step

    def step(s: State, _: None) -> tuple[State, None]:
        return step_fn(m, hw, cfg, cx, settings, mode, s), None

    rounds = -(-settings.max_iterations // settings.scan_length)

    def cond(carry: tuple[State, Array]) -> Array:
        s, k = carry
        return ~s.done & (k < rounds)

    def body(carry: tuple[State, Array]) -> tuple[State, Array]:
        s, k = carry
        s, _ = jax.lax.scan(step, s, None, length=settings.scan_length)
        return s, k + 1

    st, _ = jax.lax.while_loop(cond, body, (st, i0))
    return SimResult(arrival_s=st.arrival[:R], admit_s=st.admit[:R], first_token_s=st.first[:R],
                     finish_s=st.finish[:R], prefix=tab.prefix, input=tab.input, output=tab.output, count=tab.count,
                     finished=st.nfin, finish_log=st.finish_log[W:W + R], end_s=jnp.maximum(st.t, st.tp),
                     area_sys=st.area_sys, area_queue=st.area_queue, area_kv=st.area_kv, busy_s=st.busy_s,
                     prefill_busy_s=st.prefill_busy_s, request_iterations=st.request_iterations,
                     iterations=st.it, blocked=st.blocked, samples=st.samples, timeline=st.timeline, unit=unit)
