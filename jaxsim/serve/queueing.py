"""Load and queueing: how many requests run at once, and how long a new one waits.

Three loads (`Load.kind`, static):

- `saturation` (default): every rank runs its configured batch; TTFT has no queueing term. This is the
  steady state throughput studies (and AIConfigurator) report.
- `concurrency` N (closed loop, what benchmark clients do): N requests are always in the system. If
  they fit the decode slots, each rank runs N / ranks of them and nobody waits; the excess waits for a
  slot, and by Little's law its mean wait is excess / throughput.
- `rate` λ (open loop, Poisson arrivals, requests/s): the running batch follows Little's law,
  batch = λ/ranks × (iterations per request) × (iteration time at the configured batch) — one
  fixed-point step from the full batch, so an upper bound —, capped at the configured batch. Prompts
  queue for the prefill servers as an M/D/1 queue: wait = ρ·S / (2(1 − ρ)) with S the prefill service
  time per request per server and ρ = λ·S / servers. When λ exceeds the capacity the queue has no
  steady state: the result is infeasible with `overload = λ / capacity − 1 > 0` (TTFT is then
  reported with ρ capped at 0.99, finite but meaningless).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim.spec import _num

LOAD_KINDS = ("saturation", "concurrency", "rate")
RHO_CAP = 0.99


class Load(eqx.Module):
    """Offered load: `kind` in LOAD_KINDS; `value` = concurrency (requests) or rate (requests/s)."""

    kind: str = eqx.field(static=True, default="saturation")
    value: Array = _num(0.0)

    def __check_init__(self) -> None:
        if self.kind not in LOAD_KINDS:
            raise ValueError(f"load kind must be one of {LOAD_KINDS}, got {self.kind!r}")


SATURATION = Load()


def served_rate(load: Load, computed_rps: Array, capacity_rps: ArrayLike, units: ArrayLike = 1.0) -> Array:
    """Requests/s per unit: under an open-loop rate the unit serves its share of the offered rate
    (never more than its capacity); otherwise what its running batch completes."""
    if load.kind == "rate":
        return jnp.minimum(load.value / units, capacity_rps)
    return computed_rps


def running_batch(load: Load, batch_cap: ArrayLike, ranks: ArrayLike, iterations_per_request: ArrayLike,
                  iteration_s: ArrayLike) -> Array:
    """Decode requests per rank actually running under `load` (≤ `batch_cap`)."""
    batch_cap = jnp.asarray(batch_cap)
    if load.kind == "concurrency":
        return jnp.minimum(batch_cap, load.value / ranks)
    if load.kind == "rate":
        return jnp.minimum(batch_cap, load.value / ranks * iterations_per_request * iteration_s)
    return batch_cap


def queue_wait(load: Load, slots: ArrayLike, capacity_rps: ArrayLike, prefill_service_s: ArrayLike,
               prefill_servers: ArrayLike) -> tuple[Array, Array]:
    """(mean wait before prefill starts, overload) for the whole serving unit.

    Args:
        slots: requests the unit can hold in decode at once.
        capacity_rps: requests/s the unit completes at full occupancy.
        prefill_service_s: seconds one prefill server spends per request.
        prefill_servers: prefill servers working in parallel.
    """
    zero = jnp.zeros_like(jnp.asarray(capacity_rps))
    if load.kind == "concurrency":
        return jnp.maximum(load.value - slots, 0.0) / capacity_rps, zero
    if load.kind == "rate":
        rho = load.value * prefill_service_s / prefill_servers
        rho_c = jnp.minimum(rho, RHO_CAP)
        wait = rho_c * prefill_service_s / (2.0 * (1.0 - rho_c))
        overload = jnp.maximum(jnp.maximum(load.value / capacity_rps, rho) - 1.0, 0.0)
        return wait, overload
    return zero, zero
