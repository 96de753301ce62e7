"""What the simulator serves: arrivals (Poisson, closed loop, trace replay) and request lengths.

`Traffic` is a frozen pytree like the other specs: the arrival and length kinds are static (one
compilation each), every number is a float array that can carry a leading axis of configurations.
Lengths of the cached prefix, new input and output tokens are either fixed at the nominal `Workload`,
drawn from a uniform or lognormal distribution around it, or drawn jointly (same row for all three) from
an empirical table — the rows of a trace. `generate` turns a `Traffic` and a PRNG key into the
fixed-size request table one simulated serving unit sees.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxsim.presets import SpecError
from jaxsim.spec import Workload, _num

ARRIVAL_KINDS = ("poisson", "closed", "trace")
LENGTH_KINDS = ("fixed", "uniform", "lognormal", "empirical")
TRACE_COLUMNS = ("arrival_s", "input_tokens", "output_tokens")


class Traffic(eqx.Module):
    """Offered traffic of one simulation.

    Args:
        arrival: "poisson" (open loop at `rate_per_s`), "closed" (`concurrency` clients, each issuing its
            next request when the previous one finishes, the first ones spread evenly over `ramp_s`), or
            "trace" (replay `trace_*` in order: arrival time and lengths per request).
        lengths: "fixed" (the workload's lengths), "uniform" (input and output uniform on
            mean × [1 − spread, 1 + spread]), "lognormal" (input and output lognormal with the workload's
            mean and log-σ = spread) or "empirical" (rows of `trace_*` drawn with replacement).
        rate_per_s, concurrency, ramp_s, spread: see above (whole serving system).
        kv_capacity_tokens: KV tokens one attention-DP rank may hold; ≤ 0 derives it from memory.
        request_count: requests the simulated unit serves, ≤ the table's R rows; ≤ 0 = all R (lets
            configurations of one batch simulate different numbers of requests).
        trace_arrival_s, trace_input, trace_output, trace_prefix: the trace or empirical table, shape (rows,).
    """

    arrival: str = eqx.field(static=True, default="poisson")
    lengths: str = eqx.field(static=True, default="fixed")
    rate_per_s: Array = _num(1.0)
    concurrency: Array = _num(1.0)
    ramp_s: Array = _num(0.0)
    spread: Array = _num(0.0)
    kv_capacity_tokens: Array = _num(0.0)
    request_count: Array = _num(0.0)
    trace_arrival_s: Array = eqx.field(converter=lambda x: jnp.asarray(x, jnp.result_type(float)),
                                       default_factory=lambda: jnp.zeros(1))
    trace_input: Array = eqx.field(converter=lambda x: jnp.asarray(x, jnp.result_type(float)),
                                   default_factory=lambda: jnp.ones(1))
    trace_output: Array = eqx.field(converter=lambda x: jnp.asarray(x, jnp.result_type(float)),
                                    default_factory=lambda: jnp.ones(1))
    trace_prefix: Array = eqx.field(converter=lambda x: jnp.asarray(x, jnp.result_type(float)),
                                    default_factory=lambda: jnp.zeros(1))

    def __check_init__(self) -> None:
        if self.arrival not in ARRIVAL_KINDS:
            raise ValueError(f"arrival kind must be one of {ARRIVAL_KINDS}, got {self.arrival!r}")
        if self.lengths not in LENGTH_KINDS:
            raise ValueError(f"length kind must be one of {LENGTH_KINDS}, got {self.lengths!r}")


class Requests(eqx.Module):
    """The request table of one simulated unit, in issue order (shape (R,) each).

    `arrival_s` is meaningful for open-loop traffic; closed-loop arrivals are set during the run.
    Rows at index ≥ `count` do not exist (a trace shorter than R, or one thinned over several groups).
    """

    arrival_s: Array
    prefix: Array
    input: Array
    output: Array
    count: Array  # int32 scalar


def poisson(rate_per_s: float, **kw: float) -> Traffic:
    """Open-loop Poisson traffic at `rate_per_s` requests/s (checked)."""
    _positive("rate", rate_per_s, "requests/s")
    return Traffic(arrival="poisson", rate_per_s=rate_per_s, **kw)


def closed_loop(concurrency: float, **kw: float) -> Traffic:
    """Closed-loop traffic: `concurrency` clients always in the system (checked)."""
    _positive("concurrency", concurrency, "requests")
    return Traffic(arrival="closed", concurrency=concurrency, **kw)


def _positive(label: str, value: float, unit: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise SpecError(f"{label} must be a finite number > 0 {unit}, got {value!r}")


def load_trace(path: str | Path) -> dict[str, np.ndarray]:
    """Read a trace CSV: a header with `arrival_s`, `input_tokens`, `output_tokens` (and optionally
    `prefix_tokens`), one request per row. Arrival times must be ≥ 0 and non-decreasing, lengths whole
    numbers with input and output ≥ 1. Returns float arrays keyed by `arrival_s`, `input`, `output`, `prefix`.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"trace {path}: no such file; pass a CSV with columns {', '.join(TRACE_COLUMNS)}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in TRACE_COLUMNS if c not in header]
        if missing:
            raise SpecError(f"trace {path}: missing column(s) {', '.join(missing)}; expected a header with "
                            f"{', '.join(TRACE_COLUMNS)} (prefix_tokens optional)")
        rows = [{k.strip(): v for k, v in r.items() if k is not None} for r in reader]
    if not rows:
        raise SpecError(f"trace {path}: no requests; add at least one row")
    cols: dict[str, list[float]] = {"arrival_s": [], "input": [], "output": [], "prefix": []}
    for line, r in enumerate(rows, start=2):
        try:
            vals = (float(r["arrival_s"]), float(r["input_tokens"]), float(r["output_tokens"]),
                    float(r.get("prefix_tokens") or 0.0))
        except (TypeError, ValueError):
            raise SpecError(f"trace {path}, line {line}: not a number in {r}; every field must be numeric") from None
        a, i, o, p = vals
        if not all(math.isfinite(v) for v in vals) or a < 0 or p < 0 or i < 1 or o < 1:
            raise SpecError(f"trace {path}, line {line}: need arrival_s ≥ 0, input and output ≥ 1, prefix ≥ 0; "
                            f"got {a:g}, {i:g}, {o:g}, {p:g}")
        if any(v != round(v) for v in (i, o, p)):
            raise SpecError(f"trace {path}, line {line}: token counts must be whole numbers")
        if cols["arrival_s"] and a < cols["arrival_s"][-1]:
            raise SpecError(f"trace {path}, line {line}: arrival_s {a:g} is earlier than the row before; "
                            "sort the trace by arrival time")
        for k, v in zip(cols, vals, strict=True):
            cols[k].append(v)
    return {k: np.asarray(v, np.float32) for k, v in cols.items()}


def trace_traffic(trace: dict[str, np.ndarray], arrival: str = "trace", **kw: float) -> Traffic:
    """Traffic replaying a trace (`arrival="trace"`), or drawing lengths from it (`lengths="empirical"`)."""
    return Traffic(arrival=arrival, trace_arrival_s=trace["arrival_s"], trace_input=trace["input"],
                   trace_output=trace["output"], trace_prefix=trace["prefix"], **kw)


def _lengths(key: Array, kind: str, mean: Array, spread: Array, n: int) -> Array:
    if kind == "fixed":
        return jnp.broadcast_to(mean, (n,))
    if kind == "uniform":
        return mean * (1.0 + spread * jax.random.uniform(key, (n,), minval=-1.0, maxval=1.0))
    # lognormal with the given mean: median = mean · exp(−σ²/2)
    return mean * jnp.exp(spread * jax.random.normal(key, (n,)) - 0.5 * spread**2)


def generate(key: Array, traffic: Traffic, w: Workload, n: int, groups: ArrayLike, max_context: ArrayLike
             ) -> Requests:
    """The request table (R = `n` rows) of one of `groups` identical serving groups sharing `traffic`.

    Open-loop traffic is split evenly: Poisson at rate / groups (random routing thins a Poisson
    process into Poisson processes), a trace round-robin (the group takes every `groups`-th row).
    Lengths are rounded to whole tokens, input and output ≥ 1, and clipped to the model's context.
    """
    k_arr, k_in, k_out, k_emp = jax.random.split(key, 4)
    g = jnp.maximum(jnp.round(jnp.asarray(groups, jnp.float32)), 1.0)
    rows = traffic.trace_input.shape[0]
    count = jnp.asarray(n, jnp.int32)
    if traffic.arrival == "trace":
        idx = jnp.arange(n) * g.astype(jnp.int32)
        count = jnp.minimum(jnp.ceil(rows / g).astype(jnp.int32), n)
        idx = jnp.minimum(idx, rows - 1)
        arrival = traffic.trace_arrival_s[idx]
        prefix, inp, out = traffic.trace_prefix[idx], traffic.trace_input[idx], traffic.trace_output[idx]
    else:
        if traffic.arrival == "poisson":
            gaps = jax.random.exponential(k_arr, (n,)) * g / traffic.rate_per_s
            arrival = jnp.cumsum(gaps) - gaps[0]  # the first request arrives at t = 0
        else:
            arrival = jnp.zeros(n)
        if traffic.lengths == "empirical":
            idx = jax.random.randint(k_emp, (n,), 0, rows)
            prefix, inp, out = traffic.trace_prefix[idx], traffic.trace_input[idx], traffic.trace_output[idx]
        else:
            prefix = jnp.broadcast_to(w.prefix_tokens, (n,))
            inp = _lengths(k_in, traffic.lengths, w.input_tokens, traffic.spread, n)
            out = _lengths(k_out, traffic.lengths, w.output_tokens, traffic.spread, n)
    prefix = jnp.round(jnp.maximum(prefix, 0.0))
    inp = jnp.clip(jnp.round(inp), 1.0, jnp.maximum(max_context - prefix - 1.0, 1.0))
    out = jnp.clip(jnp.round(out), 1.0, jnp.maximum(max_context - prefix - inp, 1.0))
    wanted = jnp.round(traffic.request_count).astype(jnp.int32)
    count = jnp.where(wanted > 0, jnp.minimum(count, wanted), count)
    valid = jnp.arange(n) < count
    arrival = jnp.where(valid, arrival, jnp.inf)
    return Requests(arrival_s=arrival, prefix=prefix, input=inp, output=out, count=count)
