"""Load and queueing: how many requests run at once, and how long a new one waits.

Three loads (`Load.kind`, static):

- `saturation` (default): every rank runs its configured batch; TTFT has no queueing term. This is the
  steady state throughput studies (and AIConfigurator) report.
- `concurrency` N (closed loop, what benchmark clients do): N requests are always in the system. If
  they fit the decode slots, each rank runs N / ranks of them and nobody waits; the excess waits for a
  slot, and by Little's law its mean wait is excess / throughput. The clients start together and send
  requests of equal lengths (benchmark tools such as aiperf / genai-perf `--concurrency N` with fixed
  ISL / OSL and `ignore_eos`), so requests that were admitted together finish together and their
  successors arrive together: a rank's prompts arrive as one group each round and are prefilled in the
  same iteration(s) (`admitted_prompts`). After the first round each group is admitted as it arrives; a
  group larger than the prefill budget splits into budget-sized groups that keep their spacing, so no
  request waits behind another group's prefill — when prefill chunks ride with the decodes. A scheduler
  that runs prefill batches apart and first (SGLang's default) starts every sub-group's decodes only after
  the group's last prefill batch, so the whole group finishes and returns together each round and its
  prompts queue behind each other (`wave_iterations`).
  The first round is such a wave for every scheduler: all N prompts arrive at once and queue behind each
  other's prefill. `Load.rounds` says whether the reported TTFT includes it: 0 (default) is the steady
  state after it; R > 0 is the mean over R measured requests per client that start together, the first of
  them the wave (`first_round_share` = 1 / R). Benchmark tools start the measured phase that way: aiperf
  waits for every warm-up response before it starts profiling, so its N clients send their first measured
  requests together, and AIConfigurator's benchmark template sends `--num-requests 20 N` (R = 20).
  `Load.arrivals` says what happens after the first round. "grouped" (default): equal lengths, so the groups
  re-form every round as above. "spread": lengths drawn at random per request (`benchmark_serving
  --random-range-ratio 0.8` as SemiAnalysis InferenceX runs it: lengths uniform on [0.8 L, L], 10 N requests),
  so requests that started together finish apart and their successors arrive one by one: each is prefilled in
  an iteration of its own (one prompt per burst, like an open loop), and only the first round is a wave, for
  every scheduler; each such request also waits for the decode iteration in flight when it arrives
  (`serve/agg.py`).
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
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import _num

LOAD_KINDS = ("saturation", "concurrency", "rate")
ARRIVALS = ("grouped", "spread")
RHO_CAP = 0.99


class Load(eqx.Module):
    """Offered load: `kind` in LOAD_KINDS; `value` = concurrency (requests) or rate (requests/s).

    `rounds` (closed loop only): measured requests per client after a synchronised start, whose first round
    is a prefill wave the mean TTFT includes with weight 1 / rounds; 0 (default) reports the steady state.
    `arrivals` (closed loop only, static): "grouped" when the clients' requests have equal lengths and re-form
    the same groups every round, "spread" when their lengths are drawn at random so they arrive apart after
    the first round (see the module docstring).
    """

    kind: str = eqx.field(static=True, default="saturation")
    value: Array = _num(0.0)
    rounds: Array = _num(0.0)
    arrivals: str = eqx.field(static=True, default="grouped")

    def __check_init__(self) -> None:
        if self.kind not in LOAD_KINDS:
            raise ValueError(f"load kind must be one of {LOAD_KINDS}, got {self.kind!r}")
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"load arrivals must be one of {ARRIVALS}, got {self.arrivals!r}")

    @property
    def grouped(self) -> bool:
        """Whether a closed loop's prompts arrive in the same groups every round (not only the first)."""
        return self.kind == "concurrency" and self.arrivals == "grouped"


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


def admitted_prompts(load: Load, running: ArrayLike) -> Array:
    """Prompts a rank admits into one prefill-carrying iteration (before the chunk budget caps them): the
    whole group of its running requests under a closed loop whose groups re-form every round, else one
    (prompts that arrive apart, or a saturated queue drained one prompt's chunk at a time)."""
    running = jnp.asarray(running)
    if load.grouped:
        return jnp.maximum(running, 1.0)
    return jnp.ones_like(running)


def wave_iterations(load: Load, group_iterations: ArrayLike, own_iterations: ArrayLike, mode: Mode = HARD) -> Array:
    """Prefill iterations a prompt waits for other prompts of its own group when the group is prefilled back
    to back (a synchronised closed loop whose scheduler runs prefill apart from decode): the group needs
    `group_iterations`, the prompt itself `own_iterations`; prompt j waits for the j − 1 batches before it,
    half of the others on average. 0 for other loads."""
    group_iterations = jnp.asarray(group_iterations)
    if load.kind == "concurrency":
        return 0.5 * smooth.relu(group_iterations - own_iterations, mode)
    return jnp.zeros_like(group_iterations)


def first_round_share(load: Load) -> Array:
    """Weight of the synchronised first round in the mean TTFT: 1 / `rounds` under a closed loop whose
    measurement includes its start (`rounds` > 0), else 0."""
    rounds = jnp.asarray(load.rounds)
    if load.kind == "concurrency":
        return jnp.where(rounds > 0.0, 1.0 / jnp.maximum(rounds, 1.0), 0.0)
    return jnp.zeros_like(rounds)


def adp_balance_wait(load: Load, timeout_s: ArrayLike, dp: ArrayLike, rank_rate: ArrayLike, running: ArrayLike,
                     mode: Mode = HARD) -> Array:
    """Mean wait a new prompt spends held by attention-DP context balancing (TensorRT-LLM
    `attention_dp_config.enable_balance`): while the ranks' decodes run, a rank's waiting prompts are held
    until every DP rank has one or `timeout_s` after the first held one, then all are scheduled together.

    With prompts reaching each rank at `rank_rate` (Poisson), a hold opens with one prompt and lasts
    W = min(timeout, H(dp − 1) / rank_rate), the expected time until each of the other dp − 1 ranks has one
    (H: harmonic number); the opener waits W, the dp·rate·W prompts arriving during it W / 2 on average, so
    the mean is W (1 + ΛW / 2) / (1 + ΛW), Λ = dp · rank_rate. Nothing is held when a rank has no decodes
    (weight min(running, 1)^dp) or with one rank. Arrivals in whole groups (a synchronised closed loop) reach
    every rank at once and are not held: 0 for grouped loads and saturation; the caller weights a closed
    loop's first round out."""
    rate = jnp.maximum(jnp.asarray(rank_rate), 1e-12)
    dp = jnp.asarray(dp)
    if load.kind == "saturation" or load.grouped:
        return jnp.zeros_like(rate * dp)
    others = jnp.maximum(dp - 1.0, 0.0)
    harmonic = jsp.digamma(others + 1.0) + np.euler_gamma
    hold = smooth.minimum(jnp.asarray(timeout_s), harmonic / rate, mode)
    busy = jnp.clip(jnp.asarray(running), 0.0, 1.0) ** dp
    return jnp.where(dp > 1.0, busy * held_wait(hold, dp * rate), 0.0)


def held_wait(hold_s: ArrayLike, rate: ArrayLike) -> Array:
    """Mean wait of Poisson arrivals (`rate` per second) at a gate that opens a hold of `hold_s` with its first
    arrival and releases everyone at its end: the opener waits the whole hold, the rate·hold arrivals during
    it half of it on average, W (1 + ΛW / 2) / (1 + ΛW)."""
    hold = jnp.asarray(hold_s)
    arrivals = jnp.asarray(rate) * hold
    return hold * (1.0 + 0.5 * arrivals) / (1.0 + arrivals)


def batch_wait(load: Load, timeout_s: ArrayLike, tokens: ArrayLike, decode_tokens: ArrayLike,
               input_tokens: ArrayLike, rate: ArrayLike, running: ArrayLike, mode: Mode = HARD) -> Array:
    """Mean wait a new prompt spends held by TensorRT-LLM's batch waiting (`batch_wait_timeout_iters`,
    `batch_wait_max_tokens_ratio`): while decodes run, context requests are held until the iteration would carry
    `tokens` tokens (the running decodes' `decode_tokens` plus the waiting prompts' `input_tokens` each) or
    `timeout_s` has passed. With prompts arriving at `rate` (Poisson), a hold lasts W = min(timeout, (k − 1) /
    rate), k = (tokens − decode_tokens) / input prompts to reach the mark (no hold when one prompt does), and
    holds its arrivals `held_wait`. Nothing is held while the rank has no decodes (weight min(running, 1)), nor
    for arrivals in whole groups or under saturation (0)."""
    rate = jnp.maximum(jnp.asarray(rate), 1e-12)
    if load.kind == "saturation" or load.grouped:
        return jnp.zeros_like(rate * jnp.asarray(timeout_s))
    more = smooth.relu((jnp.asarray(tokens) - jnp.asarray(decode_tokens)) / jnp.asarray(input_tokens) - 1.0, mode)
    hold = smooth.minimum(jnp.maximum(jnp.asarray(timeout_s), 0.0), more / rate, mode)
    return jnp.clip(jnp.asarray(running), 0.0, 1.0) * held_wait(hold, rate)


MVA_ITERATIONS = 60  # Schweitzer fixed-point steps (converges well before this for N up to 10^5)


def closed_network_wait(load: Load, servers: ArrayLike, service_s: ArrayLike, think_s: ArrayLike,
                        mode: Mode = HARD) -> Array:
    """Mean wait at a station of `servers` parallel servers (each `service_s` per request) that N closed-loop
    clients visit once per cycle, spending `think_s` elsewhere (approximate mean-value analysis: Seidmann's
    single-server equivalent — demand S / c plus a delay S (c − 1) / c — solved with Schweitzer's fixed point
    R = (S / c)(1 + Q (N − 1) / N), X = N / (R + Z'), Q = X R). Exact in its limits: no wait for one client, and
    N / (c / S) − Z − S for N far beyond the knee (the asymptotic bound `bottleneck_wait` gives). It assumes
    exponential service, so near the knee it waits more than a deterministic server would. 0 for other loads."""
    n = jnp.asarray(load.value, dtype=jnp.result_type(float))
    c = jnp.maximum(jnp.asarray(servers), 1e-12)
    demand = jnp.asarray(service_s) / c
    z = jnp.maximum(jnp.asarray(think_s), 0.0) + jnp.asarray(service_s) * (c - 1.0) / c
    if load.kind != "concurrency":
        return jnp.zeros_like(demand * z)
    frac = jnp.where(n > 0.0, (n - 1.0) / jnp.maximum(n, 1e-12), 0.0)

    def step(_: int, q: Array) -> Array:
        r = demand * (1.0 + q * frac)
        return n * r / (r + z)

    q0 = jnp.zeros_like(demand * z * n)
    q = jax.lax.fori_loop(0, MVA_ITERATIONS, step, q0)
    return smooth.relu(demand * q * frac, mode)


def bottleneck_wait(load: Load, capacity_rps: ArrayLike, unqueued_latency_s: ArrayLike, mode: Mode = HARD) -> Array:
    """Closed-loop wait that the unit's bottleneck imposes (asymptotic bound of a closed queueing network):
    N requests circulate at no more than `capacity_rps`, so by Little's law each spends at least N / capacity
    in the system; what that exceeds the latency without queueing (`unqueued_latency_s`) is spent waiting.
    0 for other loads."""
    excess = jnp.asarray(load.value / jnp.asarray(capacity_rps) - unqueued_latency_s)
    if load.kind == "concurrency":
        return smooth.relu(excess, mode)
    return jnp.zeros_like(excess)


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
