"""Many configurations at once: `vmap` of `simulate` (+ `summarize`) over a leading axis of configurations."""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from jaxsim.batching import batch_size
from jaxsim.serve.estimate import Config
from jaxsim.simulate.engine import DEFAULT_SETTINGS, Settings, SimResult, run_requests, unit_of
from jaxsim.simulate.stats import Summary, summarize
from jaxsim.simulate.traffic import Requests, Traffic, generate
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Hardware, Model, Workload

_TRACE = ("trace_arrival_s", "trace_input", "trace_output", "trace_prefix")


def _split_trace(traffic: Traffic) -> tuple[Traffic, tuple[Array, ...]]:
    """The traffic with its (unbatched) trace table taken out, and the table."""
    table = tuple(getattr(traffic, k) for k in _TRACE)
    empty = eqx.tree_at(lambda t: tuple(getattr(t, k) for k in _TRACE), traffic, tuple(jnp.zeros(()) for _ in _TRACE))
    return empty, table


def _broadcast(tree: object, n: int) -> object:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x)[1:])) if jnp.ndim(x) else jnp.full((n,), x),
                        tree)


def _engine_traffic(t: Traffic) -> Traffic:
    """The traffic as the engine sees it: only closed vs open loop is a static choice there, so Poisson and
    trace replays share one compilation."""
    return Traffic(arrival="closed" if t.arrival == "closed" else "poisson", lengths="fixed",
                   rate_per_s=t.rate_per_s, concurrency=t.concurrency, ramp_s=t.ramp_s, spread=t.spread,
                   kv_capacity_tokens=t.kv_capacity_tokens, request_count=t.request_count,
                   trace_arrival_s=jnp.zeros_like(t.rate_per_s),
                   trace_input=jnp.zeros_like(t.rate_per_s), trace_output=jnp.zeros_like(t.rate_per_s),
                   trace_prefix=jnp.zeros_like(t.rate_per_s))


@partial(eqx.filter_jit)
def _generate(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, keys: Array, table: tuple,
              n: int, mode: Mode) -> Requests:
    def one(m_: Model, hw_: Hardware, c: Config, w_: Workload, t: Traffic, k: Array) -> Requests:
        t = eqx.tree_at(lambda x: tuple(getattr(x, f) for f in _TRACE), t, table)
        return generate(k, t, w_, n, unit_of(m_, hw_, c, w_, t, mode).groups, m_.max_context)

    return jax.vmap(one)(m, hw, cfg, w, traffic, keys)


@partial(eqx.filter_jit)
def _run(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, tab: Requests, settings: Settings,
         mode: Mode, warmup_frac: float, summary_only: bool) -> SimResult | Summary:
    def one(m_: Model, hw_: Hardware, c: Config, w_: Workload, t: Traffic, tb: Requests) -> SimResult | Summary:
        r = run_requests(m_, hw_, c, w_, t, tb, settings, mode)
        return summarize(r, warmup_frac) if summary_only else r

    return jax.vmap(one)(m, hw, cfg, w, traffic, tab)


def _tables(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, keys: Array, table: tuple,
            settings: Settings, mode: Mode) -> Requests:
    return _generate(m, hw, cfg, w, traffic, keys, table, settings.requests, mode)


def _prepare(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, seed: int | Array
             ) -> tuple[tuple, tuple, int]:
    light, table = _split_trace(traffic)
    arrays, static = eqx.partition((m, hw, cfg, w, light), eqx.is_array)
    n = batch_size(arrays)
    arrays = _broadcast(arrays, n)
    keys = jax.random.split(jax.random.PRNGKey(seed) if jnp.ndim(seed) == 0 else seed, n)
    return eqx.combine(arrays, static), (keys, table), n


def simulate_batch(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, seed: int = 0,
                   settings: Settings = DEFAULT_SETTINGS, mode: Mode = HARD) -> SimResult:
    """`simulate` for N configurations: any array leaf of `m`, `hw`, `cfg`, `w` or `traffic` (its trace table
    excepted, which all share) may carry a leading axis of N; scalars are broadcast. Configuration i gets
    the PRNG key `split(PRNGKey(seed), N)[i]`. One compilation per (architecture, kinds, N, settings)."""
    (m, hw, cfg, w, traffic), (keys, table), _ = _prepare(m, hw, cfg, w, traffic, seed)
    tab = _tables(m, hw, cfg, w, traffic, keys, table, settings, mode)
    return _run(m, hw, cfg, w, _engine_traffic(traffic), tab, settings, mode, 0.0, False)


def simulate_summary(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, seed: int = 0,
                     settings: Settings = DEFAULT_SETTINGS, warmup_frac: float = 0.1, mode: Mode = HARD) -> Summary:
    """`summarize(simulate_batch(...))` in one compiled call: only the summaries leave the device."""
    (m, hw, cfg, w, traffic), (keys, table), _ = _prepare(m, hw, cfg, w, traffic, seed)
    tab = _tables(m, hw, cfg, w, traffic, keys, table, settings, mode)
    return _run(m, hw, cfg, w, _engine_traffic(traffic), tab, settings, mode, warmup_frac, True)


@partial(eqx.filter_jit)
def summarize_batch(results: SimResult, warmup_frac: float = 0.1) -> Summary:
    """`summarize` over the leading axis of a `simulate_batch` result (compiled once per shape)."""
    return jax.vmap(lambda r: summarize(r, warmup_frac))(results)
