"""Differentiable allocation search: maximise output tokens/s/GPU under TTFT, TPOT and memory limits.

The allocation variables of each architecture are relaxed to continuous values and parameterised in
unconstrained, dimensionless coordinates (logs of sizes, logits of shares):

    agg          log batch, log chunk
    disagg       logit of the prefill share of the GPUs, log prefill batch, log decode batch
    agg+afd      logit of the attention share nA / (nA + nF), log(M − 1) micro-batches, log batch, log chunk

(optionally any hardware field in log space for co-design). The relaxed model runs in SMOOTH mode.
The objective is log(tokens/s/GPU) under the constraints g = log(TTFT / target), log(TPOT / target),
log(memory / capacity) ≤ 0, handled by an augmented Lagrangian: an inner loop of Adam steps on
−f + Σ ρ/2 · max(0, g + λ/ρ)², then λ ← max(0, λ + ρ·g) and ρ ← 2ρ (capped), a fixed number of
rounds. Convergence rule: the run reports, per start, the largest constraint value and the change of
the objective over the last round; a start counts as converged when both are below 1e-3.
Inner and outer loops are one `lax.scan` each inside one jit; starts and the discrete axes (TP, DP, EP,
instance sizes) run at once under `vmap`. The best relaxed point of each discrete combination is then
rounded and repaired (`rounded_allocations`, then a local search with `neighbours` / `batch_moves`):
integer batches near it and a coarse batch ladder, every legal chunk, rate-matched P/D worker counts,
the legal attention/FFN splits next to it, all evaluated with the hard model; the best feasible one is
reported next to the relaxed one.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsim.serve import AFDConfig, AggConfig, DisaggConfig, Load, Metrics, estimate, estimate_batch
from jaxsim.serve.queueing import SATURATION
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO, Deployment, Hardware, Model, Workload

OPT_ARCHITECTURES = ("agg", "disagg", "agg+afd")
LEGAL_CHUNKS = (256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0)
MAX_BATCH = 1024.0
MAX_PREFILL_BATCH = 16.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """Optimiser settings (static)."""

    starts: int = 6
    rounds: int = 10
    steps: int = 60
    learning_rate: float = 0.08
    rho0: float = 4.0
    rho_max: float = 1e3
    temperature: float = 0.02
    seed: int = 0


def _sig(x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(x)


def relaxed_config(arch: str, theta: jax.Array, base: Any, total_gpus: float) -> Any:
    """The configuration the unconstrained variables `theta` stand for (continuous, differentiable).

    `base` carries the discrete choices; for disagg and AFD `total_gpus` is the unit being split.
    """
    if arch == "agg":
        return eqx.tree_at(lambda c: (c.batch, c.chunk), base, (jnp.exp(theta[0]), jnp.exp(theta[1])))
    if arch == "disagg":
        share = _sig(theta[0])
        wp = share * total_gpus / base.prefill.gpus
        wd = (1.0 - share) * total_gpus / base.decode.gpus
        return eqx.tree_at(lambda c: (c.prefill_workers, c.decode_workers, c.prefill_batch, c.decode_batch), base,
                           (wp, wd, jnp.exp(theta[1]), jnp.exp(theta[2])))
    if arch == "agg+afd":
        n_attn = _sig(theta[0]) * total_gpus
        d = eqx.tree_at(lambda x: (x.dp, x.ep), base.deploy,
                        (n_attn / base.deploy.tp, (total_gpus - n_attn) / base.deploy.moe_tp))
        return eqx.tree_at(lambda c: (c.deploy, c.micro_batches, c.batch, c.chunk), base,
                           (d, 1.0 + jnp.exp(theta[1]), jnp.exp(theta[2]), jnp.exp(theta[3])))
    raise ValueError(f"no relaxation for {arch!r}; known: {OPT_ARCHITECTURES}")


def initial_theta(arch: str, key: jax.Array, starts: int) -> jax.Array:
    """Spread starting points (log batch 8–256, log chunk 1k–8k, shares 0.2–0.8, M 1.5–5)."""
    u = jax.random.uniform(key, (starts, 4))
    lb = jnp.log(8.0) + u[:, 0] * (jnp.log(256.0) - jnp.log(8.0))
    lc = jnp.log(1024.0) + u[:, 1] * jnp.log(8.0)
    share = jnp.log(0.25 / 0.75) + u[:, 2] * 2 * jnp.log(3.0)
    if arch == "agg":
        return jnp.stack([lb, lc], axis=1)
    if arch == "disagg":
        return jnp.stack([share, jnp.log(1.0 + 3.0 * u[:, 3]), lb], axis=1)
    return jnp.stack([share, jnp.log(0.5 + 3.5 * u[:, 3]), lb, lc], axis=1)


def _constraints(r: Metrics, slo: SLO) -> jax.Array:
    return jnp.stack([jnp.log(r.ttft_s / slo.ttft_s), jnp.log(r.tpot_s / slo.tpot_s), jnp.log(r.memory_frac)])


class Relaxed(eqx.Module):
    """The relaxed optimum of one start: variables, objective, constraints (≤ 0 is feasible)."""

    theta: jax.Array
    objective: jax.Array  # tokens/s/GPU of the relaxed (smooth) model
    constraints: jax.Array  # log(TTFT/target), log(TPOT/target), log(memory/capacity)
    last_change: jax.Array  # |change of log objective| over the last round


class OptState(eqx.Module):
    """Augmented-Lagrangian state of every (combination, start); what checkpoints hold."""

    theta: jax.Array
    lam: jax.Array
    rho: jax.Array
    adam: Any
    objective: jax.Array
    last_change: jax.Array
    rounds_done: jax.Array


@eqx.filter_jit
def _round(m: Model, hw: Hardware, arch: str, total_gpus: float, w: Workload, slo: SLO, load: Load, s: Settings,
           bases: Any, state: OptState) -> tuple[OptState, Relaxed]:
    """One augmented-Lagrangian round for all (combination, start) pairs: `steps` Adam steps in a
    `lax.scan`, then the multiplier and penalty updates. Compiled once per problem shape; every round
    (and every later problem of the same shapes) reuses it."""
    mode = Mode(smooth=True, temperature=s.temperature)
    opt = optax.adam(s.learning_rate)

    def one(base: Any, st: OptState) -> tuple[OptState, Relaxed]:
        def metrics(theta: jax.Array) -> Metrics:
            return estimate(m, hw, relaxed_config(arch, theta, base, total_gpus), w, slo, load, mode)

        def lagrangian(theta: jax.Array) -> jax.Array:
            r = metrics(theta)
            g = _constraints(r, slo)
            penalty = jnp.sum(st.rho / 2 * jnp.maximum(0.0, g + st.lam / st.rho) ** 2 - st.lam**2 / (2 * st.rho))
            return -jnp.log(r.out_tok_per_s_per_gpu) + penalty

        def step(c: tuple, _: None) -> tuple:
            th, ad = c
            gr = jax.grad(lagrangian)(th)
            gr = jnp.where(jnp.isfinite(gr), gr, 0.0)
            upd, ad = opt.update(gr, ad)
            return (jnp.clip(optax.apply_updates(th, upd), -12.0, 12.0), ad), None

        (theta, adam), _ = jax.lax.scan(step, (st.theta, st.adam), None, length=s.steps)
        r = metrics(theta)
        g = _constraints(r, slo)
        obj = jnp.log(r.out_tok_per_s_per_gpu)
        new = OptState(theta, jnp.maximum(0.0, st.lam + st.rho * g), jnp.minimum(st.rho * 2.0, s.rho_max), adam,
                       obj, jnp.abs(obj - st.objective), st.rounds_done + 1)
        return new, Relaxed(theta, r.out_tok_per_s_per_gpu, g, new.last_change)

    return jax.vmap(lambda b, st: jax.vmap(lambda x: one(b, x))(st))(bases, state)


def init_state(arch: str, n_combos: int, s: Settings) -> OptState:
    """Starting points and fresh multipliers for every (combination, start)."""
    keys = jax.random.split(jax.random.PRNGKey(s.seed), n_combos)
    theta = jax.vmap(lambda k: initial_theta(arch, k, s.starts))(keys)
    adam = jax.vmap(jax.vmap(optax.adam(s.learning_rate).init))(theta)
    shape = theta.shape[:2]
    return OptState(theta, jnp.zeros((*shape, 3)), jnp.full(shape, s.rho0), adam, jnp.zeros(shape),
                    jnp.full(shape, jnp.inf), jnp.zeros(shape, jnp.int32))


def solve_relaxed(m: Model, hw: Hardware, arch: str, bases: Any, total_gpus: float, w: Workload, slo: SLO,
                  load: Load = SATURATION, settings: Settings = Settings(), checkpoint_dir: Any = None,
                  stop_after_rounds: int | None = None) -> Relaxed:
    """Relaxed optima of every (discrete combination, start): leading axes (combos, starts).

    With `checkpoint_dir`, the optimiser state is saved (orbax) after every round and a later call
    continues from the last saved round, giving the same trajectory as an uninterrupted run.
    """
    n = jax.tree.leaves(bases)[0].shape[0]
    state = init_state(arch, n, settings)
    ckpt = None
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        ckpt = ocp.PyTreeCheckpointer()
        root = Path(checkpoint_dir).resolve() / arch.replace("+", "_")
        done = sorted(p for p in root.glob("round_*") if p.name.removeprefix("round_").isdigit())
        if done:
            state = ckpt.restore(done[-1], item=state)
    def run(bases: Any, state: OptState) -> tuple[OptState, Relaxed]:
        return _round(m, hw, arch, float(total_gpus), w, slo, load, settings, bases, state)

    relaxed = None
    start = int(np.asarray(state.rounds_done).max())
    for r in range(start, settings.rounds):
        if stop_after_rounds is not None and r - start >= stop_after_rounds:
            break
        state, relaxed = run(bases, state)
        if ckpt is not None:
            ckpt.save(root / f"round_{r + 1:04d}", state)
    if relaxed is None:  # nothing left to run: evaluate the saved state
        state, relaxed = run(bases, state)
    return relaxed


# --------------------------------------------------------------------------------------------------
# Rounding and repair
# --------------------------------------------------------------------------------------------------


MAX_MICRO_BATCHES = 16.0
BATCH_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Allocation values of each architecture that rounding and repair choose (the discrete base fixes the rest).
ALLOCATION = {"agg": ("batch", "chunk"),
              "disagg": ("prefill_workers", "decode_workers", "prefill_batch", "decode_batch"),
              "agg+afd": ("n_attn", "micro_batches", "batch", "chunk")}
Alloc = tuple[float, ...]


def _batches(b: float, hi: float) -> list[float]:
    """Integer batches around a relaxed one: floor/ceil and a multiplicative neighbourhood. A relaxed
    batch outside [1, hi] is clamped first, so its neighbourhood stays legal instead of empty."""
    b = min(max(b, 1.0), hi)
    out = {math.floor(b), math.ceil(b)}
    out |= {round(b * f) for f in (0.85, 0.9, 0.95, 0.97, 0.99, 1.01, 1.03, 1.05, 1.1, 1.2)}
    return sorted(float(x) for x in out if 1 <= x <= hi)


def _steps(b: float, hi: float) -> list[float]:
    """Moves of the local search from a legal batch: ±1, ±2 and relative steps from −50 % to +100 %."""
    out = {b - 2, b - 1, b + 1, b + 2} | {round(b * f) for f in (0.5, 0.8, 0.9, 0.95, 1.05, 1.1, 1.25, 1.5, 2.0)}
    return sorted(float(x) for x in out if 1 <= x <= hi and x != b)


def _chunk_steps(c: float) -> list[float]:
    """Every other legal chunk (there are few)."""
    return [x for x in LEGAL_CHUNKS if x != c]


def afd_splits(base: AFDConfig, total_gpus: float, m: Model) -> list[float]:
    """Attention GPUs nA of every legal split of `total_gpus` into nA + nF: nA a multiple of the attention TP,
    nF a multiple of the FFN's MoE-TP whose expert-parallel degree nF / MoE-TP divides the routed experts."""
    tp, moe_tp = float(base.deploy.tp), float(base.deploy.moe_tp)
    experts = float(m.n_routed_experts)
    out = []
    for n_attn in range(1, int(total_gpus)):
        n_ffn = total_gpus - n_attn
        if n_attn % tp == 0 and n_ffn >= moe_tp and n_ffn % moe_tp == 0 and experts % (n_ffn / moe_tp) == 0:
            out.append(float(n_attn))
    return out


def _pd_pairs(ratio: float, base: DisaggConfig, total_gpus: float) -> list[tuple[float, float]]:
    """Integer (prefill, decode) worker counts that fit the cluster with a prefill:decode ratio next to the
    relaxed one: for every decode count, the two prefill counts around ratio × decode (rate matching), plus
    the counts that fill the cluster around the relaxed share."""
    gp, gd = float(base.prefill.gpus), float(base.decode.gpus)
    pairs = set()
    for wd in range(1, int(total_gpus // gd) + 1):
        for wp in {math.floor(wd * ratio), math.ceil(wd * ratio)}:
            if wp >= 1 and wp * gp + wd * gd <= total_gpus:
                pairs.add((float(wp), float(wd)))
    share = ratio * gp / (ratio * gp + gd)
    for wp in {math.floor(share * total_gpus / gp), math.ceil(share * total_gpus / gp)}:
        wd = math.floor((total_gpus - wp * gp) / gd)
        for wd_ in (wd, wd - 1):
            if wp >= 1 and wd_ >= 1:
                pairs.add((float(wp), float(wd_)))
    return sorted(pairs)


def rounded_allocations(arch: str, theta: np.ndarray, base: Any, total_gpus: float, m: Model,
                        ladder: bool = False) -> list[Alloc]:
    """Legal allocations (values of `ALLOCATION[arch]`) next to the relaxed point `theta` of one base.
    With `ladder` (used when the relaxed point misses a constraint, so its neighbourhood may be empty of
    feasible points) a coarse ladder of batches is added over the same integer structure."""
    if arch == "agg":
        # Every legal chunk: the hard model counts whole prefill iterations (a chunk that divides the prompt
        # can win although the smooth model prefers another), and there are only a few.
        # The coarse batch ladder always joins: under a binding TTFT / TPOT limit the best batch at another
        # chunk can be far from the relaxed one, and the whole set is a few hundred points.
        bs = _batches(math.exp(theta[0]), MAX_BATCH) + list(map(float, BATCH_LADDER))
        return sorted(set(itertools.product(bs, LEGAL_CHUNKS)))
    if arch == "disagg":
        share = 1 / (1 + math.exp(-theta[0]))
        gp, gd = float(base.prefill.gpus), float(base.decode.gpus)
        ratio = (share * total_gpus / gp) / max((1 - share) * total_gpus / gd, 1e-9)
        pbs = _batches(math.exp(theta[1]), MAX_PREFILL_BATCH)
        dbs = _batches(math.exp(theta[2]), MAX_BATCH)
        if ladder:
            pbs = sorted(set(pbs) | {1.0, 2.0, 4.0, 8.0})
            dbs = sorted(set(dbs) | set(map(float, BATCH_LADDER)))
        return [(wp, wd, pb, db) for (wp, wd) in _pd_pairs(ratio, base, total_gpus) for pb in pbs for db in dbs]
    splits = afd_splits(base, total_gpus, m)
    if not splits:
        return []
    rel = 1 / (1 + math.exp(-theta[0])) * total_gpus
    arr = np.asarray(splits)
    i = int(np.searchsorted(arr, rel))
    near = {splits[j] for j in range(i - 2, i + 2) if 0 <= j < len(splits)}
    mb = 1 + math.exp(theta[1])
    micros = {float(min(max(x, 1), MAX_MICRO_BATCHES)) for x in (math.floor(mb), math.ceil(mb))}
    bs = _batches(math.exp(theta[2]), MAX_BATCH)
    cs = list(LEGAL_CHUNKS)
    bs = sorted(set(bs) | set(map(float, BATCH_LADDER)))  # as for agg: a few hundred points more
    if ladder:
        near, micros = set(splits), micros | {1.0, 2.0, 3.0, 4.0}
    return sorted(set(itertools.product(sorted(near), sorted(micros), bs, cs)))


def _discrete_key(arch: str, a: Alloc) -> Alloc:
    """The allocation values the repair treats as discrete choices (chunk; P/D worker counts; AFD split,
    micro-batches and chunk): the local search also refines the batches of the best allocation of each."""
    if arch == "agg":
        return (a[1],)
    return (a[0], a[1]) if arch == "disagg" else (a[0], a[1], a[3])


def batch_moves(arch: str, a: Alloc) -> list[Alloc]:
    """Allocations next to `a` that change only its batches (batch; P/D prefill and decode batch)."""
    if arch == "agg":
        return [(b, a[1]) for b in _steps(a[0], MAX_BATCH)]
    if arch == "disagg":
        return [(a[0], a[1], pb, db) for pb in [a[2], *_steps(a[2], MAX_PREFILL_BATCH)]
                for db in [a[3], *_steps(a[3], MAX_BATCH)] if (pb, db) != (a[2], a[3])]
    return [(a[0], a[1], b, a[3]) for b in _steps(a[2], MAX_BATCH)]


def neighbours(arch: str, a: Alloc, base: Any, total_gpus: float, m: Model) -> list[Alloc]:
    """Legal allocations near `a` (the moves of the repair's local search). Batch and chunk (and, for P/D, the
    decode batch and the worker counts; for AFD, batch, chunk and micro-batches) move jointly, since a TPOT or
    TTFT limit couples them: the best legal point can sit two single moves away behind an infeasible one.
    Moves: batch ±1, ±2 or a relative step, any legal chunk, micro-batches ±1, the adjacent legal split, one
    worker more or fewer in either P/D pool."""
    if arch == "agg":
        out = itertools.product([a[0], *_steps(a[0], MAX_BATCH)], LEGAL_CHUNKS)
    elif arch == "disagg":
        gp, gd = float(base.prefill.gpus), float(base.decode.gpus)
        pairs = [(wp, wd) for wp in (a[0] - 1, a[0], a[0] + 1) for wd in (a[1] - 1, a[1], a[1] + 1)
                 if wp >= 1 and wd >= 1 and wp * gp + wd * gd <= total_gpus]
        out = [(wp, wd, pb, db) for (wp, wd) in pairs for pb in [a[2], *_steps(a[2], MAX_PREFILL_BATCH)]
               for db in [a[3], *_steps(a[3], MAX_BATCH)]]
    else:
        splits = afd_splits(base, total_gpus, m)
        i = splits.index(a[0])
        near = [splits[j] for j in (i - 1, i, i + 1) if 0 <= j < len(splits)]
        micros = [v for v in (a[1] - 1, a[1], a[1] + 1) if 1 <= v <= MAX_MICRO_BATCHES]
        out = itertools.product(near, micros, [a[2], *_steps(a[2], MAX_BATCH)], LEGAL_CHUNKS)
    return [tuple(map(float, x)) for x in out if tuple(x) != a]


def build(arch: str, base: Any, a: Alloc, total_gpus: float) -> Any:
    """The configuration of `base` with allocation `a` written in."""
    if arch == "agg":
        return eqx.tree_at(lambda x: (x.batch, x.chunk), base, a)
    if arch == "disagg":
        return eqx.tree_at(lambda x: (x.prefill_workers, x.decode_workers, x.prefill_batch, x.decode_batch), base, a)
    n_attn, micro, batch, chunk = a
    d = eqx.tree_at(lambda x: (x.dp, x.ep), base.deploy,
                    (n_attn / float(base.deploy.tp), (total_gpus - n_attn) / float(base.deploy.moe_tp)))
    return eqx.tree_at(lambda x: (x.deploy, x.micro_batches, x.batch, x.chunk), base, (d, micro, batch, chunk))


def stack(configs: Sequence[Any]) -> Any:
    """Configurations of one architecture as one pytree with a leading axis."""
    return jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v, jnp.float32) for v in x]), *configs)


@dataclasses.dataclass
class OptimizeResult:
    """The relaxed optimum and the best legal configuration of one architecture."""

    arch: str
    relaxed_config: Any
    relaxed_tok_per_s_per_gpu: float
    relaxed_constraints: np.ndarray
    converged_starts: int
    total_starts: int
    legal_config: Any | None  # None when no legal candidate meets the SLO
    legal_metrics: Metrics | None
    model_evaluations: int  # smooth forward + backward counted once per step, plus hard evaluations


def optimize(m: Model, hw: Hardware, arch: str, bases: Sequence[Any], total_gpus: float, w: Workload, slo: SLO,
             load: Load = SATURATION, settings: Settings = Settings(), checkpoint_dir: Any = None,
             stop_after_rounds: int | None = None) -> OptimizeResult:
    """Optimise the continuous allocation of `arch` for every discrete base configuration, round and
    repair each combination's best relaxed point, and return the best legal configuration overall."""
    if arch not in OPT_ARCHITECTURES:
        raise ValueError(f"no relaxation for {arch!r}; known: {OPT_ARCHITECTURES}")
    stacked = stack(bases)
    relaxed = solve_relaxed(m, hw, arch, stacked, total_gpus, w, slo, load, settings, checkpoint_dir,
                            stop_after_rounds)
    obj = np.asarray(relaxed.objective)
    cons = np.asarray(relaxed.constraints)
    change = np.asarray(relaxed.last_change)
    viol = cons.max(axis=-1)
    converged = int(np.sum((viol < 1e-3) & (change < 1e-3)))
    score = np.where(viol <= 1e-3, obj, -np.inf)  # prefer relaxed points that meet every constraint
    tried: dict[tuple[int, Alloc], float] = {}
    first: list[tuple[int, Alloc]] = []
    for i, base in enumerate(bases):
        met = bool(np.isfinite(score[i]).any())
        j = int(np.argmax(score[i])) if met else int(np.argmin(viol[i]))
        first += [(i, a) for a in rounded_allocations(arch, np.asarray(relaxed.theta[i, j]), base, total_gpus, m,
                                                      ladder=not met)]
    best_i, best_j = np.unravel_index(np.argmax(np.where(np.isfinite(score), score, -1e30 - viol)), score.shape)
    relaxed_cfg = relaxed_config(arch, relaxed.theta[best_i, best_j], bases[best_i], total_gpus)
    result = OptimizeResult(arch, relaxed_cfg, float(obj[best_i, best_j]), cons[best_i, best_j], converged,
                            int(obj.size), None, None, 0)
    stacked_np = jax.tree.map(np.asarray, stacked)
    best: tuple[float, int, Alloc, Any] | None = None
    batch = first
    for _ in range(1 + REPAIR_ROUNDS):
        batch = list(dict.fromkeys(c for c in batch if c not in tried))
        if not batch:
            break
        hard = _evaluate(m, hw, arch, stacked_np, batch, total_gpus, w, slo, load)
        tput = np.where(np.asarray(hard.feasible), np.asarray(hard.out_tok_per_s_per_gpu, np.float64), -np.inf)
        tried.update(zip(batch, tput.tolist(), strict=True))
        k = int(np.argmax(tput))
        if np.isfinite(tput[k]) and (best is None or tput[k] > best[0]):
            best = (float(tput[k]), *batch[k], jax.tree.map(lambda x, k=k: x[k], hard))
        # Local search on the hard model: joint moves from the best few feasible allocations so far and from the
        # best of every base (the relaxed ranking of bases can differ from the hard one), and batch moves from the
        # best allocation of each of the best (base, discrete choice) pairs (the smooth model blurs whole
        # prefill iterations and worker counts, so the best batch can differ between chunks or pools).
        feasible = sorted((c for c, t in tried.items() if np.isfinite(t)), key=lambda c: -tried[c])
        per_base: dict[int, Alloc] = {}
        per_key: dict[tuple[int, Alloc], Alloc] = {}
        for i, a in feasible:
            per_base.setdefault(i, a)
            per_key.setdefault((i, _discrete_key(arch, a)), a)
        top = list(dict.fromkeys([*feasible[:REPAIR_WIDTH], *per_base.items()]))
        batch = [(i, nb) for i, a in top for nb in neighbours(arch, a, bases[i], total_gpus, m)]
        batch += [(i, nb) for (i, _), a in list(per_key.items())[:REPAIR_KEYS] for nb in batch_moves(arch, a)]
    result.model_evaluations = len(bases) * settings.starts * (settings.rounds * (settings.steps + 1) + 1) + len(tried)
    if best is not None:
        result.legal_config = build(arch, bases[best[1]], best[2], total_gpus)
        result.legal_metrics = best[3]
    return result


REPAIR_ROUNDS = 8  # local-search rounds after the rounding (stops early once no unexplored neighbour is left)
REPAIR_WIDTH = 4  # feasible allocations whose neighbours each round evaluates (plus the best of every base)
REPAIR_BLOCK = 1024  # candidates per hard-model call
REPAIR_KEYS = 32  # best (base, discrete choice) pairs whose batches each round refines


def _evaluate(m: Model, hw: Hardware, arch: str, stacked: Any, cands: Sequence[tuple[int, Alloc]],
              total_gpus: float, w: Workload, slo: SLO, load: Load) -> Metrics:
    """Hard metrics of (base index, allocation) pairs: the bases' leaves gathered and the allocation written
    in as columns (no per-candidate pytree), in blocks of `REPAIR_BLOCK` so one shape is ever compiled."""
    n = len(cands)
    if n > REPAIR_BLOCK:
        parts = [_evaluate(m, hw, arch, stacked, cands[i:i + REPAIR_BLOCK], total_gpus, w, slo, load)
                 for i in range(0, n, REPAIR_BLOCK)]
        return jax.tree.map(lambda *x: np.concatenate(x), *parts)
    ids = np.asarray([c[0] for c in cands] + [cands[-1][0]] * (REPAIR_BLOCK - n))
    vals = np.asarray([c[1] for c in cands] + [cands[-1][1]] * (REPAIR_BLOCK - n), np.float32)
    cfg = jax.tree.map(lambda x: x[ids], stacked)
    cols = tuple(vals[:, k] for k in range(vals.shape[1]))
    if arch == "agg":
        cfg = eqx.tree_at(lambda x: (x.batch, x.chunk), cfg, cols)
    elif arch == "disagg":
        cfg = eqx.tree_at(lambda x: (x.prefill_workers, x.decode_workers, x.prefill_batch, x.decode_batch), cfg, cols)
    else:
        n_attn, micro, b, c = cols
        d = eqx.tree_at(lambda x: (x.dp, x.ep), cfg.deploy,
                        (n_attn / cfg.deploy.tp, (np.float32(total_gpus) - n_attn) / cfg.deploy.moe_tp))
        cfg = eqx.tree_at(lambda x: (x.deploy, x.micro_batches, x.batch, x.chunk), cfg, (d, micro, b, c))
    hard = estimate_batch(m, hw, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), cfg), w, slo, load)
    return jax.tree.map(lambda x: np.asarray(x)[:n], hard)


def sensitivities(m: Model, hw: Hardware, cfg: Any, w: Workload, slo: SLO, load: Load = SATURATION,
                  mode: Mode = HARD) -> dict[str, dict[str, float]]:
    """d(output tokens/s/GPU) / d(log field) at a configuration, for every hardware and workload field:
    the throughput gained per relative (e-fold) increase of each field."""

    def tput(h: Hardware, ww: Workload) -> jax.Array:
        return estimate(m, h, cfg, ww, slo, load, mode).out_tok_per_s_per_gpu

    g_hw, g_w = jax.jit(jax.grad(tput, argnums=(0, 1)))(hw, w)
    out: dict[str, dict[str, float]] = {"hardware": {}, "workload": {}}
    for name in Hardware.__dataclass_fields__:
        if name in ("name", "eff"):
            continue
        out["hardware"][name] = float(getattr(g_hw, name)) * float(getattr(hw, name))
    for name in ("prefix_tokens", "input_tokens", "output_tokens"):
        out["workload"][name] = float(getattr(g_w, name)) * float(getattr(w, name))
    return out


def default_bases(m: Model, hw: Hardware, arch: str, total_gpus: int) -> list[Any]:
    """Discrete combinations the optimiser enumerates: powers of two for TP (≤ the scale-up domain,
    dividing the heads) and attention DP, EP over every GPU of an instance (MoE-TP 1), FP8 everywhere,
    MTP on when the model has it."""
    heads, experts = float(m.n_heads), float(m.n_routed_experts)
    tps = [t for t in (1, 2, 4, 8) if t <= float(hw.scale_up_gpus) and heads % t == 0 and t <= total_gpus]
    dps = [d for d in (1, 2, 4, 8, 16, 32, 64) if d <= total_gpus]
    nextn = 1.0 if float(m.n_mtp_layers) > 0 else 0.0
    prec = {"gemm_weight_bytes": 1.0, "moe_weight_bytes": 1.0, "kv_bytes": 1.0, "nextn": nextn, "nextn_accept": 0.7}
    def dep(tp: int, dp: int) -> Deployment | None:
        gpus = tp * dp
        if gpus > total_gpus or (experts and experts % gpus):
            return None
        return Deployment(tp=tp, dp=dp, ep=gpus if experts else 1, moe_tp=1 if experts else gpus, **prec)

    deps = [d for d in (dep(t, p) for t in tps for p in dps) if d is not None]
    if arch == "agg":
        return [AggConfig(d, batch=32.0, chunk=4096.0, workers=float(total_gpus // int(d.gpus))) for d in deps]
    if arch == "disagg":
        small = [d for d in deps if float(d.gpus) <= total_gpus / 2]
        return [DisaggConfig(p, d, prefill_batch=1.0, decode_batch=32.0, prefill_workers=1.0, decode_workers=1.0)
                for p in small for d in small if float(p.tp) >= float(d.tp)]
    if arch == "agg+afd":
        return [AFDConfig(Deployment(tp=t, dp=1.0, ep=1.0, moe_tp=1.0, **prec), micro_batches=2.0, batch=64.0,
                          chunk=4096.0, workers=1.0) for t in tps if t <= 2]
    raise ValueError(f"no relaxation for {arch!r}; known: {OPT_ARCHITECTURES}")


def config_dict(arch: str, cfg: Any) -> dict[str, float]:
    """A configuration as the named values `jaxsim.sweep` uses for the same architecture."""

    def f(x: Any) -> float:
        return float(np.asarray(x))

    if arch == "agg":
        d = cfg.deploy
        return {"tp": f(d.tp), "dp": f(d.dp), "pp": f(d.pp), "moe_tp": f(d.moe_tp), "batch": f(cfg.batch),
                "chunk": f(cfg.chunk), "workers": f(cfg.workers), "nextn": f(d.nextn), "tbo": f(d.two_batch_overlap)}
    if arch == "disagg":
        p, d = cfg.prefill, cfg.decode
        return {"p_tp": f(p.tp), "p_dp": f(p.dp), "p_moe_tp": f(p.moe_tp), "prefill_batch": f(cfg.prefill_batch),
                "prefill_workers": f(cfg.prefill_workers), "d_tp": f(d.tp), "d_dp": f(d.dp), "d_pp": f(d.pp),
                "d_moe_tp": f(d.moe_tp), "decode_batch": f(cfg.decode_batch), "decode_workers": f(cfg.decode_workers),
                "nextn": f(d.nextn), "tbo": f(d.two_batch_overlap)}
    d = cfg.deploy
    return {"attn_tp": f(d.tp), "attn_dp": f(d.dp), "ffn_ep": f(d.ep), "ffn_moe_tp": f(d.moe_tp),
            "micro_batches": f(cfg.micro_batches), "batch": f(cfg.batch), "chunk": f(cfg.chunk),
            "workers": f(cfg.workers), "nextn": f(d.nextn)}
