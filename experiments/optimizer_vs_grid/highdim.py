"""A fleet shared by three workloads: the relaxation + optax against a 1e6-point random search (and the exact optimum).

    python experiments/optimizer_vs_grid/highdim.py [--samples 1000000]

One fleet of G GPUs serves a fixed traffic mix of three workloads, each from its own aggregated pool (chunked
prefill) of identical instances of one stated deployment. The decision (9 continuous variables, 8 free):
the GPU shares of the three pools (simplex), and the batch and the chunk of each pool. Objective: the fleet's
goodput λ (requests/s) for the mix: every workload k receives its share p_k of the requests, so
λ = min_k R_k / p_k, with R_k the requests/s of pool k; reported as fleet output tokens/s = λ · Σ_k p_k · out_k.
Constraints: each pool meets its workload's TTFT and TPOT targets and fits in memory (hard model).

Legal space (shared by all three methods): pool sizes are whole instances, n_k ≥ 1, Σ n_k = G / g (the fleet is
filled); batches are integers 1..1024; chunks are in LEGAL_CHUNKS — 465 × 1024³ × 7³ ≈ 1.7e14 configurations.

- Optimiser: the relaxation of the library's optimiser extended to the fleet. Variables θ = (3 share logits,
  3 log batches, 3 log chunks); n_k = G · softmax(θ_s)_k (continuous), pools priced by `jaxsim.estimate` in
  SMOOTH mode (temperature 0.02). Maximise the smooth minimum −τ·logsumexp(−log(R_k/p_k)/τ), τ = 0.02, under
  the 9 constraints log(TTFT/target), log(TPOT/target), log(memory/capacity) ≤ 0 per pool, by the same augmented
  Lagrangian as `jaxsim.optimize` (Adam lr 0.08, 10 rounds × 60 steps; λ ← max(0, λ + ρg), ρ ← min(2ρ, 1e3),
  ρ0 = 4), 16 starts under vmap, one jit. Round/repair: for the 4 best relaxed starts, every combination of
  floor/ceil instance counts that fills the fleet × per pool the library's batch neighbourhood × the two nearest
  legal chunks, priced jointly by the hard model; best feasible.
- Random search: 1e6 points drawn from the legal space (compositions uniform, batches log-uniform integers,
  chunks uniform), priced by the hard model (`estimate_batch`), best feasible.
- Exact optimum: under saturated load a pool's per-GPU rate and its latencies do not depend on how many
  instances it has, so each pool's best (batch, chunk) is found by exhaustion (7,168 each) and the 465
  compositions are enumerated; the winner is re-priced jointly with the hard model. This is the structure
  a generic optimiser does not know; it gives the true optimum to measure both searches against.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsim as js
from jaxsim import optimize as op

MODEL, HARDWARE, GPUS = "gpt-oss-120b", "h200-sxm", 64
DEPLOY = js.Deployment(tp=1, dp=2, ep=2, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)  # 2 GPUs
# (name, prefix, input, output tokens, TTFT s, TPOT s, share of requests)
POOLS = [
    ("chat", 4096.0, 512.0, 256.0, 0.2, 0.04, 0.70),
    ("coding", 2048.0, 4096.0, 1024.0, 1.0, 0.04, 0.25),
    ("agentic", 65536.0, 1024.0, 4096.0, 1.5, 0.05, 0.05),
]
STARTS, ROUNDS, STEPS, LR, RHO0, RHO_MAX, TEMP, TAU, REPAIR_STARTS = 16, 10, 60, 0.08, 4.0, 1e3, 0.02, 0.02, 4
BLOCK = 131072


def pool(tree: Any, k: int) -> Any:
    """Pool k's slice of a stacked (3, …) pytree."""
    return jax.tree.map(lambda x: x[k], tree)


def _stack(*trees: Any) -> Any:
    return jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v, jnp.float32) for v in x]), *trees)


WORK = _stack(*[js.Workload(name="pool", prefix_tokens=p, input_tokens=i, output_tokens=o) for _, p, i, o, *_ in POOLS])
SLOS = _stack(*[js.SLO(ttft_s=t, tpot_s=q) for *_, t, q, _ in POOLS])
SHARE = np.asarray([p[-1] for p in POOLS])
OUT = np.asarray([p[3] for p in POOLS])
G_INST = int(float(DEPLOY.gpus))
UNITS = GPUS // G_INST


def relaxed_fleet(m: js.Model, hw: js.Hardware, theta: jax.Array, mode: js.Mode) -> js.Metrics:
    """Metrics of the three pools (leading axis 3) at the continuous point θ."""
    workers = GPUS * jax.nn.softmax(theta[0:3]) / G_INST
    batch, chunk = jnp.exp(theta[3:6]), jnp.exp(theta[6:9])
    return jax.vmap(lambda b, c, k, w, s: js.estimate(m, hw, js.AggConfig(DEPLOY, b, c, k), w, s, mode=mode))(
        batch, chunk, workers, WORK, SLOS)


@jax.jit
def solve(m: js.Model, hw: js.Hardware, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Augmented Lagrangian for all starts at once: (θ, smooth objective, constraints) per start."""
    mode = js.Mode(smooth=True, temperature=TEMP)
    opt = optax.adam(LR)
    share = jnp.asarray(SHARE)

    def parts(theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        r = relaxed_fleet(m, hw, theta, mode)
        goodput = jnp.log(r.requests_per_s / share)
        obj = -TAU * jax.nn.logsumexp(-goodput / TAU)
        g = jnp.concatenate([jnp.log(r.ttft_s / SLOS.ttft_s), jnp.log(r.tpot_s / SLOS.tpot_s), jnp.log(r.memory_frac)])
        return obj, g

    def one(theta0: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def lagrangian(theta: jax.Array, lam: jax.Array, rho: jax.Array) -> jax.Array:
            obj, g = parts(theta)
            return -obj + jnp.sum(rho / 2 * jnp.maximum(0.0, g + lam / rho) ** 2 - lam**2 / (2 * rho))

        def round_(c: tuple, _: None) -> tuple:
            theta, adam, lam, rho = c

            def step(s: tuple, _: None) -> tuple:
                th, ad = s
                gr = jax.grad(lagrangian)(th, lam, rho)
                gr = jnp.where(jnp.isfinite(gr), gr, 0.0)
                upd, ad = opt.update(gr, ad)
                return (jnp.clip(optax.apply_updates(th, upd), -12.0, 12.0), ad), None

            (theta, adam), _ = jax.lax.scan(step, (theta, adam), None, length=STEPS)
            _, g = parts(theta)
            return (theta, adam, jnp.maximum(0.0, lam + rho * g), jnp.minimum(2 * rho, RHO_MAX)), None

        c0 = (theta0, opt.init(theta0), jnp.zeros(9), jnp.asarray(RHO0))
        (theta, *_), _ = jax.lax.scan(round_, c0, None, length=ROUNDS)
        obj, g = parts(theta)
        return theta, obj, g

    u = jax.random.uniform(key, (STARTS, 9))
    theta0 = jnp.concatenate([
        jnp.log(0.5 + u[:, 0:3]),  # shares within a factor 3 of each other
        jnp.log(8.0) + u[:, 3:6] * (jnp.log(256.0) - jnp.log(8.0)),  # batches 8–256
        jnp.log(1024.0) + u[:, 6:9] * jnp.log(8.0),  # chunks 1k–8k
    ], axis=1)
    return jax.vmap(one)(theta0)


def hard_fleet(m: js.Model, hw: js.Hardware, units: np.ndarray, batch: np.ndarray, chunk: np.ndarray) -> dict:
    """Hard-model goodput of N joint configurations: arrays (N, 3) of instances, batches, chunks per pool."""
    n = units.shape[0]
    rps = np.zeros((n, 3))
    ok = np.ones(n, bool)
    for k in range(3):
        w, s = pool(WORK, k), pool(SLOS, k)
        for start in range(0, n, BLOCK):
            idx = np.minimum(np.arange(start, start + BLOCK), n - 1)
            cfg = js.AggConfig(DEPLOY, batch=jnp.asarray(batch[idx, k], jnp.float32),
                               chunk=jnp.asarray(chunk[idx, k], jnp.float32),
                               workers=jnp.asarray(units[idx, k], jnp.float32))
            r = js.estimate_batch(m, hw, cfg, w, s)
            real = slice(0, min(BLOCK, n - start))
            rps[start:start + BLOCK, k] = np.asarray(r.requests_per_s)[real]
            ok[start:start + BLOCK] &= np.asarray(r.feasible)[real]
    lam = np.min(rps / SHARE, axis=1)
    return {"goodput": np.where(ok, lam, -np.inf), "rps": rps, "feasible": ok}


def tokens(goodput: float) -> float:
    """Fleet output tokens/s at goodput λ requests/s of the mix."""
    return float(goodput * np.sum(SHARE * OUT))


def neighbours_batch(b: float) -> list[float]:
    """The library's rounding neighbourhood of a relaxed batch (`jaxsim.optimize._batches`)."""
    out = {math.floor(b), math.ceil(b)} | {round(b * f) for f in (0.85, 0.9, 0.95, 0.97, 0.99, 1.01, 1.03, 1.05, 1.1,
                                                                   1.2)}
    return sorted(float(x) for x in out if 1 <= x <= op.MAX_BATCH)


def neighbours_chunk(c: float) -> list[float]:
    arr = np.asarray(op.LEGAL_CHUNKS)
    i = int(np.clip(np.searchsorted(arr, c), 1, len(arr) - 1))
    return [float(arr[i - 1]), float(arr[i])]


def repair(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Legal joint candidates around one relaxed point (arrays (N, 3))."""
    u = UNITS * np.exp(theta[0:3] - theta[0:3].max()) / np.exp(theta[0:3] - theta[0:3].max()).sum()
    comps = [c for c in itertools.product(*[{math.floor(x), math.ceil(x)} for x in u])
             if sum(c) == UNITS and min(c) >= 1]
    per_pool = [list(itertools.product(neighbours_batch(math.exp(theta[3 + k])),
                                       neighbours_chunk(math.exp(theta[6 + k])))) for k in range(3)]
    rows = [(c, bc) for c in comps for bc in itertools.product(*per_pool)]
    units = np.asarray([c for c, _ in rows], float).reshape(-1, 3)
    batch = np.asarray([[x[0] for x in bc] for _, bc in rows]).reshape(-1, 3)
    chunk = np.asarray([[x[1] for x in bc] for _, bc in rows]).reshape(-1, 3)
    return units, batch, chunk


def optimiser(m: js.Model, hw: js.Hardware) -> dict:
    theta, obj, g = jax.block_until_ready(solve(m, hw, jax.random.PRNGKey(0)))
    theta, obj, g = np.asarray(theta), np.asarray(obj), np.asarray(g)
    viol = g.max(axis=1)
    score = np.where(viol <= 1e-3, obj, -1e30 - viol)
    chosen = np.argsort(-score)[:REPAIR_STARTS]
    cands = [repair(theta[i]) for i in chosen]
    units, batch, chunk = (np.concatenate([c[j] for c in cands]) for j in range(3))
    hard = hard_fleet(m, hw, units, batch, chunk)
    k = int(np.argmax(hard["goodput"]))
    best = int(np.argmax(score))
    relaxed = relaxed_fleet(m, hw, jnp.asarray(theta[best]), js.HARD)  # the relaxed point priced by the hard model
    return {
        "goodput_rps": float(hard["goodput"][k]) if np.isfinite(hard["goodput"][k]) else None,
        "units": units[k].tolist(), "batch": batch[k].tolist(), "chunk": chunk[k].tolist(),
        "relaxed_goodput_rps": float(np.exp(obj[best])), "relaxed_constraint_max": float(viol[best]),
        "relaxed_gpus": (GPUS * np.exp(theta[best, :3]) / np.exp(theta[best, :3]).sum()).tolist(),
        "relaxed_batch": np.exp(theta[best, 3:6]).tolist(), "relaxed_chunk": np.exp(theta[best, 6:9]).tolist(),
        "relaxed_hard_rps": np.asarray(relaxed.requests_per_s).tolist(),
        "feasible_starts": int(np.sum(viol <= 1e-3)), "starts": STARTS,
        # one evaluation = one pool priced once; a gradient step counts as one (forward + backward)
        "model_evaluations": STARTS * 3 * (ROUNDS * (STEPS + 1) + 1) + 3 * units.shape[0],
        "candidates": int(units.shape[0]),
    }


def random_search(m: js.Model, hw: js.Hardware, samples: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    # Compositions of UNITS into 3 positive parts, uniformly: two distinct cut points in 1..UNITS-1.
    a = rng.integers(1, UNITS, samples)
    b = rng.integers(1, UNITS - 1, samples)
    b = np.where(b >= a, b + 1, b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    units = np.stack([lo, hi - lo, UNITS - hi], axis=1).astype(float)
    batch = np.clip(np.floor(np.exp(rng.uniform(0.0, math.log(op.MAX_BATCH + 1), (samples, 3)))), 1, op.MAX_BATCH)
    chunk = np.asarray(op.LEGAL_CHUNKS)[rng.integers(0, len(op.LEGAL_CHUNKS), (samples, 3))]
    hard = hard_fleet(m, hw, units, batch, chunk)
    gp = hard["goodput"]
    k = int(np.argmax(gp))
    best_at = {n: float(np.max(gp[:n])) for n in (10_000, 100_000, samples) if n <= samples}
    return {"goodput_rps": float(gp[k]) if np.isfinite(gp[k]) else None, "units": units[k].tolist(),
            "batch": batch[k].tolist(), "chunk": chunk[k].tolist(), "samples": samples,
            "feasible_samples": int(np.isfinite(gp).sum()), "model_evaluations": 3 * samples,
            "best_after": {str(n): (v if np.isfinite(v) else None) for n, v in best_at.items()}}


def exact(m: js.Model, hw: js.Hardware) -> dict:
    bb, cc = (x.ravel() for x in np.meshgrid(np.arange(1.0, op.MAX_BATCH + 1), np.asarray(op.LEGAL_CHUNKS)))
    best = []
    for k in range(3):
        w, s = pool(WORK, k), pool(SLOS, k)
        r = js.estimate_batch(m, hw, js.AggConfig(DEPLOY, batch=jnp.asarray(bb, jnp.float32),
                                                  chunk=jnp.asarray(cc, jnp.float32), workers=1.0), w, s)
        per_inst = np.where(np.asarray(r.feasible), np.asarray(r.requests_per_s, np.float64), -np.inf)
        i = int(np.argmax(per_inst))
        best.append((per_inst[i], bb[i], cc[i]))
    comps = np.asarray([(a, b, UNITS - a - b) for a in range(1, UNITS) for b in range(1, UNITS - a)], float)
    lam = np.min(comps * np.asarray([x[0] for x in best]) / SHARE, axis=1)
    j = int(np.argmax(lam))
    units = comps[j:j + 1]
    batch = np.asarray([[x[1] for x in best]])
    chunk = np.asarray([[x[2] for x in best]])
    joint = hard_fleet(m, hw, units, batch, chunk)
    return {"goodput_rps": float(joint["goodput"][0]), "separable_prediction_rps": float(lam[j]),
            "units": units[0].tolist(), "batch": batch[0].tolist(), "chunk": chunk[0].tolist(),
            "model_evaluations": 3 * len(bb) + 3, "compositions": len(comps)}


def main(samples: int = 1_000_000) -> dict:
    m, hw = js.load_model(MODEL), js.load_hardware(HARDWARE)
    print(f"\n== high-dim: {MODEL} on {GPUS} × {HARDWARE}, pools of TP1 DP2 EP2 instances, mix "
          f"{dict(zip([p[0] for p in POOLS], SHARE.tolist(), strict=True))}", flush=True)
    t = time.perf_counter()
    opt = optimiser(m, hw)
    opt["first_call_s"] = time.perf_counter() - t  # compilation included
    t = time.perf_counter()
    opt_again = optimiser(m, hw)
    opt["steady_s"] = time.perf_counter() - t
    assert opt_again["goodput_rps"] == opt["goodput_rps"]
    print(f"  optimiser  {opt['goodput_rps']:.3f} req/s ({tokens(opt['goodput_rps'] or 0):.0f} out tok/s), "
          f"{opt['model_evaluations']:,} evals, {opt['first_call_s']:.1f} s first call, {opt['steady_s']:.1f} s "
          f"steady; units {opt['units']} batch {opt['batch']} chunk {opt['chunk']}", flush=True)
    t = time.perf_counter()
    rnd = random_search(m, hw, samples)
    rnd["first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rnd_again = random_search(m, hw, samples)
    rnd["steady_s"] = time.perf_counter() - t
    assert rnd_again["goodput_rps"] == rnd["goodput_rps"]
    print(f"  random     {rnd['goodput_rps'] or 0:.3f} req/s ({tokens(rnd['goodput_rps'] or 0):.0f} out tok/s), "
          f"{rnd['model_evaluations']:,} evals, {rnd['first_call_s']:.1f} s first call, "
          f"{rnd['steady_s']:.1f} s steady; "
          f"units {rnd['units']} batch {rnd['batch']} chunk {rnd['chunk']}; best after {rnd['best_after']}",
          flush=True)
    t = time.perf_counter()
    ex = exact(m, hw)
    ex["s"] = time.perf_counter() - t
    print(f"  exact      {ex['goodput_rps']:.3f} req/s ({tokens(ex['goodput_rps']):.0f} out tok/s) "
          f"(separable prediction {ex['separable_prediction_rps']:.3f}); units {ex['units']} batch {ex['batch']} "
          f"chunk {ex['chunk']}", flush=True)
    for r in (opt, rnd, ex):
        r["fleet_out_tok_per_s"] = tokens(r["goodput_rps"] or 0.0)
        r["ratio_to_exact"] = (r["goodput_rps"] or 0.0) / ex["goodput_rps"]
    return {
        "model": MODEL, "hardware": HARDWARE, "gpus": GPUS, "instance": "TP1 DP2 EP2 (2 GPUs), FP8",
        "pools": [{"name": p[0], "prefix": p[1], "input": p[2], "output": p[3], "ttft_ms": p[4] * 1e3,
                   "tpot_ms": p[5] * 1e3, "request_share": p[6]} for p in POOLS],
        "legal_space_size": (UNITS - 1) * (UNITS - 2) // 2 * int(op.MAX_BATCH) ** 3 * len(op.LEGAL_CHUNKS) ** 3,
        "optimiser_beats_random": (opt["goodput_rps"] or 0.0) > (rnd["goodput_rps"] or 0.0),
        "optimiser": opt, "random_search": rnd, "exact": ex,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    print(json.dumps(main(ap.parse_args().samples), indent=1, default=float))
