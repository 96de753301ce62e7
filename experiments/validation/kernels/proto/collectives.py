"""Prototype: a protocol-regime model of NCCL collectives and TRT-LLM's custom all-reduce, fitted per system.

Each collective's time is the fastest of a few regimes (NCCL's protocols / the custom all-reduce's
algorithms), each regime `latency(n) + traffic(op, n) * bytes / (link_bw * frac * peers(n))`, joined
by a smooth minimum and never below the bandwidth bound `traffic_min(op, n) * bytes / link_bw`.
Inputs: op, bytes (per-GPU buffer as in `jaxsim.calibrate.tables`), n, and the nominal per-GPU
per-direction NVLink bandwidth of the system (`Hardware.scale_up_bytes_per_s`).
See collectives.md for the formula, fitted values and results.

    python experiments/validation/kernels/proto/collectives.py [--data DIR] [--steps 600] [--cache DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

jax.config.update("jax_enable_x64", False)

SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
DEFAULT_DATA = "/work/aicv/lib/python3.11/site-packages/aiconfigurator_core/systems/data"
SOFT = 0.05  # smooth-minimum temperature in log-time (p-norm with p = 1/SOFT); fixed, not fitted

# Parameters: name -> (coordinate, start). "us": latency in µs, exp(z); "frac": sigmoid(z) in (0, 1);
# "pos": exp(z) > 0 (dimensionless).
PARAMS = {
    # ring collectives (all-gather, reduce-scatter; NCCL ring): LL, LL128 (shares LL's per-hop latency), Simple
    "ring_ll_lat0": ("us", 4.0), "ring_ll_lat1": ("us", 1.0), "ring_ll_frac": ("frac", 0.15),
    "ring_s_lat0": ("us", 8.0), "ring_s_lat1": ("us", 2.0), "ring_s_frac": ("frac", 0.8),
    "ring_peer_k": ("pos", 0.5), "ring_128_lat0": ("us", 6.0), "ring_128_frac": ("frac", 0.4),
    # all-to-all (NCCL grouped send/recv): LL and Simple
    "a2a_ll_lat0": ("us", 6.0), "a2a_ll_frac": ("frac", 0.05),
    "a2a_s_lat0": ("us", 12.0), "a2a_s_frac": ("frac", 0.8), "a2a_peer_k": ("pos", 0.3),
    # custom all-reduce (TRT-LLM): one-shot, two-shot (reduce-scatter + all-gather), NVLS (multimem)
    "ar_1s_lat0": ("us", 2.5), "ar_1s_lat1": ("us", 0.1), "ar_1s_frac": ("frac", 0.6),
    "ar_2s_lat0": ("us", 8.0), "ar_2s_frac": ("frac", 0.7),
    "ar_nvls_lat0": ("us", 20.0), "ar_nvls_frac": ("frac", 0.6),
}
NAMES = tuple(PARAMS)


def to_z(vals: dict[str, float]) -> dict[str, jnp.ndarray]:
    out = {}
    for k, v in vals.items():
        kind = PARAMS[k][0]
        out[k] = jnp.float32(np.log(v / (1 - v)) if kind == "frac" else np.log(v))
    return out


def from_z(z: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    out = {}
    for k, v in z.items():
        kind = PARAMS[k][0]
        out[k] = jax.nn.sigmoid(v) if kind == "frac" else (jnp.exp(v) * 1e-6 if kind == "us" else jnp.exp(v))
    return out


def softmin(*ts: jnp.ndarray) -> jnp.ndarray:
    """Smooth minimum in log space: (sum t_i^(-1/SOFT))^(-SOFT); ≤ min t_i, → min as SOFT → 0."""
    lt = jnp.stack([jnp.log(t) for t in ts])
    return jnp.exp(-SOFT * jax.nn.logsumexp(-lt / SOFT, axis=0))


def collective_s(p: dict[str, jnp.ndarray], op: jnp.ndarray, nbytes: jnp.ndarray, n: jnp.ndarray,
                 link_bw: float) -> jnp.ndarray:
    """Seconds of one collective. op: 0 all_reduce, 1 all_gather, 2 reduce_scatter, 3 all_to_all (int array);
    nbytes: per-GPU buffer bytes; n: GPUs (float, ≥ 2); link_bw: nominal bytes/s per GPU per direction."""
    m = n - 1.0
    b = nbytes / link_bw  # seconds to move the buffer once at the nominal link rate
    # Ring all-gather / reduce-scatter: every GPU sends and receives (n-1)/n of the buffer.
    ring_tr = m / n
    ring_peer = m / (m + p["ring_peer_k"])
    ring_ll = p["ring_ll_lat0"] + p["ring_ll_lat1"] * m + ring_tr * b / p["ring_ll_frac"]
    ring_s = p["ring_s_lat0"] + p["ring_s_lat1"] * m + ring_tr * b / (p["ring_s_frac"] * ring_peer)
    ring_128 = p["ring_128_lat0"] + p["ring_ll_lat1"] * m + ring_tr * b / (p["ring_128_frac"] * ring_peer)
    ring = softmin(ring_ll, ring_128, ring_s)
    # All-to-all: (n-1)/n of the buffer leaves and enters every GPU.
    a2a_peer = m / (m + p["a2a_peer_k"])
    a2a_ll = p["a2a_ll_lat0"] + ring_tr * b / p["a2a_ll_frac"]
    a2a_s = p["a2a_s_lat0"] + ring_tr * b / (p["a2a_s_frac"] * a2a_peer)
    a2a = softmin(a2a_ll, a2a_s)
    # Custom all-reduce: one-shot (each GPU reads the n-1 peer buffers), two-shot (2(n-1)/n, ring-like),
    # NVLS (in-switch reduction: (n+1)/n of the buffer each direction). Two-shot shares the ring's peer ramp.
    ar_1s = p["ar_1s_lat0"] + p["ar_1s_lat1"] * m + m * b / p["ar_1s_frac"]
    ar_2s = p["ar_2s_lat0"] + 2.0 * ring_tr * b / (p["ar_2s_frac"] * ring_peer)
    ar_nv = p["ar_nvls_lat0"] + (n + 1.0) / n * b / p["ar_nvls_frac"]
    ar = softmin(ar_1s, ar_2s, ar_nv)
    # Bandwidth bound at the nominal link rate (the least traffic any algorithm needs).
    bound = jnp.where(op == 0, jnp.minimum(2.0 * ring_tr, (n + 1.0) / n), ring_tr) * b
    t = jnp.where(op == 0, ar, jnp.where(op == 3, a2a, ring))
    return jnp.maximum(t, bound)


def load(system: str, data: str, cache: str | None) -> pd.DataFrame:
    if cache:
        f = Path(cache) / f"{system}.csv"
        if f.exists():
            return pd.read_csv(f)
    from jaxsim import calibrate as C
    from jaxsim.calibrate.tables import heldout_mask

    df, _ = C.load_table(system, None, data)
    df["held"] = heldout_mask(df)
    c = df[df["op"].isin(OPS)].reset_index(drop=True)
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        c.to_csv(Path(cache) / f"{system}.csv", index=False)
    return c


def arrays(c: pd.DataFrame):
    op = jnp.asarray(c["op"].map({o: i for i, o in enumerate(OPS)}).to_numpy(np.int32))
    return (op, jnp.asarray(c["bytes"].to_numpy(np.float32)), jnp.asarray(c["gpus"].to_numpy(np.float32)),
            jnp.asarray((c["latency_ms"].to_numpy() * 1e-3).astype(np.float32)))


def make_fit(steps: int, lr: float):
    adam = optax.adam(lr)

    def loss(z, op, nb, n, y, w, bw):
        pred = collective_s(from_z(z), op, nb, n, bw)
        return jnp.sum(w * (jnp.log(pred) - jnp.log(y)) ** 2)

    vg = jax.value_and_grad(loss)

    @jax.jit
    def run(z0, op, nb, n, y, w, bw):
        def body(carry, _):
            z, s = carry
            v, g = vg(z, op, nb, n, y, w, bw)
            g = jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), g)
            u, s = adam.update(g, s, z)
            return (optax.apply_updates(z, u), s), v

        (z, _), hist = jax.lax.scan(body, (z0, adam.init(z0)), None, length=steps)
        return z, hist

    return run, jax.jit(loss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--cache", default=None, help="folder to cache the imported collective rows as CSV")
    ap.add_argument("--residuals", action="store_true", help="print signed held-out errors per op, n, size band")
    args = ap.parse_args()
    from jaxsim import presets

    t_start = time.perf_counter()
    run, _loss_j = make_fit(args.steps, args.lr)
    z0 = to_z({k: v[1] for k, v in PARAMS.items()})
    summary, fitted = [], {}
    for system in args.systems.split(","):
        c = load(system, args.data, args.cache)
        bw = float(presets.load_hardware(system, calibrated=False).scale_up_bytes_per_s)
        fit_rows = c[~c["held"].astype(bool)]
        op, nb, n, y = arrays(fit_rows)
        # every op weighs equally (as in jaxsim.calibrate.fit), mean over its rows
        cnt = fit_rows["op"].map(fit_rows["op"].value_counts()).to_numpy()
        w = jnp.asarray((1.0 / (fit_rows["op"].nunique() * cnt)).astype(np.float32))
        t0 = time.perf_counter()
        z, hist = run(z0, op, nb, n, y, w, jnp.float32(bw))
        z = jax.block_until_ready(z)
        dt = time.perf_counter() - t0
        vals = {k: float(v) for k, v in from_z(z).items()}
        fitted[system] = vals
        op_a, nb_a, n_a, _ = arrays(c)
        c = c.assign(pred_ms=np.asarray(collective_s(from_z(z), op_a, nb_a, n_a, jnp.float32(bw))) * 1e3)
        c["err"] = c["pred_ms"] / c["latency_ms"] - 1.0
        h = c[c["held"].astype(bool)]
        f = c[~c["held"].astype(bool)]
        row = {"system": system, "fit_msle": float(hist[-1]), "msle@600": float(hist[min(599, len(hist) - 1)]),
               "fit_ape": 100 * f["err"].abs().median(), "held_ape": 100 * h["err"].abs().median(),
               "held_p90": 100 * h["err"].abs().quantile(0.9), "held_n": len(h), "fit_s": round(dt, 1)}
        for o in OPS:
            row[o] = 100 * h.loc[h["op"] == o, "err"].abs().median()
        summary.append(row)
        if args.residuals:
            c["band"] = pd.cut(np.log2(c["bytes"]), [7, 12, 15, 18, 21, 24, 27, 31],
                               labels=["≤4K", "8-32K", "64-256K", "0.5-2M", "4-16M", "32-128M", "≥256M"])
            print(f"\n{system}: median signed error % (all rows), op x n by size band")
            print((100 * c.pivot_table(index=["op", "gpus"], columns="band", values="err", aggfunc="median",
                                       observed=True)).round(0).to_string())
    pd.set_option("display.width", 200)
    print("\nfitted parameters (latencies in µs, fractions, k dimensionless)")
    tab = pd.DataFrame(fitted)
    for k in tab.index:
        if PARAMS[k][0] == "us":
            tab.loc[k] *= 1e6
    print(tab.round(4).to_string())
    print("\nheld-out median |error| % (per op: held-out rows of that op)")
    print(pd.DataFrame(summary).round(3).to_string(index=False))
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
