"""From a `SimResult` to the numbers a deployment is judged on: latency percentiles, throughput, KV use,
and the Little's-law bookkeeping of the simulated queue.

Steady state: the first and last `warmup_frac` of the requests (by issue order) are left out of the
latency statistics (ramp-up, and the drain at the end when a finite run stops issuing); throughput counts
the output tokens produced between `warmup_frac` of the time to the last arrival and the last arrival.
`warmup_frac = 0` keeps every completed request (what a benchmark client reports).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from jaxsim.simulate.engine import SimResult

PERCENTILES = (50.0, 90.0, 99.0)
STAT_NAMES = ("mean", "p50", "p90", "p99")


class Summary(eqx.Module):
    """Per configuration; latency vectors hold (mean, p50, p90, p99) in seconds.

    Rates are for the whole serving system (the simulated group × groups). `little_*` compare the
    time-integrated number of requests in the system (and waiting for service) with arrival rate × mean
    time in it (= Σ time in it / run length), over the whole run.
    """

    ttft_s: Array
    tpot_s: Array
    e2e_s: Array
    queue_wait_s: Array  # mean wait from arrival to service start (agg: slot admission; P/D: prefill start)
    requests_per_s: Array  # output tokens/s ÷ mean output length
    out_tok_per_s: Array
    out_tok_per_s_per_gpu: Array
    kv_frac_mean: Array  # time-average held KV / capacity
    kv_frac_max: Array  # largest sampled held KV / capacity
    completed: Array  # requests finished (the simulated group)
    count: Array  # requests in the table
    completed_frac: Array
    blocked: Array  # a request could not fit an empty unit (KV or batch too small)
    little_l_sys: Array  # time-average requests in the system
    little_lw_sys: Array  # arrival rate × mean time in the system
    little_l_queue: Array
    little_lw_queue: Array
    sim_s: Array  # simulated time
    iterations: Array
    request_iterations: Array
    gpus: Array


def _stats(x: Array, mask: Array) -> Array:
    v = jnp.where(mask, x, jnp.nan)
    mean = jnp.nansum(v) / jnp.maximum(mask.sum(), 1)
    pct = jnp.nanpercentile(v, jnp.asarray(PERCENTILES))
    return jnp.where(mask.any(), jnp.concatenate([mean[None], pct]), jnp.nan)


def summarize(r: SimResult, warmup_frac: float = 0.1) -> Summary:
    """Latency statistics and rates of one `SimResult` (vmap it for many; see the module docstring)."""
    n = r.arrival_s.shape[0]
    i = jnp.arange(n)
    count = r.count.astype(jnp.float32)
    done = jnp.isfinite(r.finish_s) & (i < r.count)
    lo, hi = jnp.floor(warmup_frac * count), jnp.ceil((1.0 - warmup_frac) * count)
    steady = done & (i >= lo) & (i < hi)
    ttft = r.first_token_s - r.arrival_s
    e2e = r.finish_s - r.arrival_s
    tpot = (r.finish_s - r.first_token_s) / jnp.maximum(r.output - 1.0, 1.0)
    f = r.finished.astype(jnp.float32)
    whole = r.end_s
    # Throughput over [t_a, t_b]: from warmup_frac of the way to the last arrival, to the last arrival
    # (after it a finite run drains and the load falls). Tokens are counted where they are produced: the
    # first at the first-token time, the rest spread evenly over the request's decode span, so bursts of
    # finishes (synchronised closed loops) do not bias the rate.
    issued = jnp.isfinite(r.arrival_s) & (i < r.count)
    t_b = jnp.max(jnp.where(issued, r.arrival_s, 0.0))
    t_a = warmup_frac * t_b
    span = t_b - t_a
    first_ok = jnp.isfinite(r.first_token_s) & (i < r.count)
    fin_ok = first_ok & jnp.isfinite(r.finish_s)
    end_i = jnp.where(fin_ok, r.finish_s, whole)
    dec_span = jnp.maximum(end_i - r.first_token_s, 1e-30)
    overlap = jnp.clip(jnp.minimum(end_i, t_b) - jnp.maximum(r.first_token_s, t_a), 0.0, None)
    rest = jnp.where(fin_ok, r.output - 1.0, jnp.nan)  # unfinished requests: their rate is unknown, skip them
    produced = (jnp.where(first_ok & (r.first_token_s >= t_a) & (r.first_token_s < t_b), 1.0, 0.0)
                + jnp.where(fin_ok, rest * jnp.where(end_i > r.first_token_s, overlap / dec_span, 0.0), 0.0))
    ok_win = span > 0
    tok = jnp.where(ok_win, produced.sum() / jnp.where(ok_win, span, 1.0),
                    jnp.where(done, r.output, 0.0).sum() / jnp.maximum(whole, 1e-30))
    mean_out = jnp.where(issued, r.output, 0.0).sum() / jnp.maximum(issued.sum(), 1)
    rps = tok / mean_out
    g = r.unit.groups
    kv_samples = r.samples[:, 1]
    wait = r.admit_s - r.arrival_s
    served = jnp.isfinite(r.admit_s) & (i < r.count)
    return Summary(
        ttft_s=_stats(ttft, steady),
        tpot_s=_stats(tpot, steady & (r.output > 1)),
        e2e_s=_stats(e2e, steady),
        queue_wait_s=jnp.where(served, wait, 0.0).sum() / jnp.maximum(served.sum(), 1),
        requests_per_s=g * rps,
        out_tok_per_s=g * tok,
        out_tok_per_s_per_gpu=g * tok / r.unit.gpus,
        kv_frac_mean=r.area_kv / jnp.maximum(whole * r.unit.kv_cap, 1e-30),
        kv_frac_max=jnp.where(jnp.isnan(kv_samples).all(), 0.0, jnp.nanmax(kv_samples)),
        completed=r.finished,
        count=r.count,
        completed_frac=f / jnp.maximum(count, 1.0),
        blocked=r.blocked,
        little_l_sys=r.area_sys / jnp.maximum(whole, 1e-30),
        little_lw_sys=jnp.where(done, e2e, 0.0).sum() / jnp.maximum(whole, 1e-30),
        little_l_queue=r.area_queue / jnp.maximum(whole, 1e-30),
        little_lw_queue=jnp.where(served, wait, 0.0).sum() / jnp.maximum(whole, 1e-30),
        sim_s=whole,
        iterations=r.iterations,
        request_iterations=r.request_iterations,
        gpus=r.unit.gpus,
    )
