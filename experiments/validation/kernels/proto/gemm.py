"""Prototype GEMM kernel-time form: tile + wave quantisation, split-K for BF16, K prologue, size-dependent
memory efficiency, a Hopper-FP8 misaligned-M penalty; fitted per system on the 80 % fit rows (MSLE, Adam).

Self-contained: loads AIConfigurator's GEMM table through `jaxsim.calibrate`, fits, prints held-out errors.

    python experiments/validation/kernels/proto/gemm.py [--data DIR] [--systems a,b] [--max-fit-rows N]

Formula and results: `gemm.md` next to this file.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsim import calibrate as C
from jaxsim import presets
from jaxsim.calibrate.tables import heldout_mask

DATA = "/work/aicv/lib/python3.11/site-packages/aiconfigurator_core/systems/data"
SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
# Streaming multiprocessors: H100 SXM5 / H200 132 (NVIDIA H100 Tensor Core GPU Architecture whitepaper;
# H200 is the same GH100 configuration), B200 148 (74 of 80 per die x 2 dies, Chips and Cheese,
# "Nvidia's B200: Keeping the CUDA Juggernaut Rolling"); GB200's GPU is a B200.
SMS = {"h100-sxm": 132.0, "h200-sxm": 132.0, "b200": 148.0, "gb200-nvl72": 148.0}
DTYPES = ("bf16", "fp8", "fp4")
OPERAND_BYTES = np.array([2.0, 1.0, 0.5], np.float32)
# Fixed CTA tile (M, N) per operand dtype: one tile's K-slice holds the same bytes (tile area x 2 / bytes).
TILE_M = np.array([64.0, 128.0, 128.0], np.float32)
TILE_N = np.array([128.0, 128.0, 256.0], np.float32)
ACT_BYTES = 2.0  # BF16 activations in and out
MIS_GATE_M = 64.0  # the misaligned-M penalty applies above this M (the smallest M tile)

# name: (per-dtype?, transform, initial value)
PARAMS = {
    "compute_frac": (True, "sigmoid", 0.75),  # achieved fraction of the per-SM tensor peak inside a tile
    "k_prologue": (True, "exp", 64.0),  # per-tile fixed cost in units of K (pipeline fill / epilogue)
    "mem_frac": (True, "sigmoid", 0.8),  # HBM bandwidth fraction for large transfers
    "latency_s": (True, "exp", 3e-6),  # fixed launch latency (incl. the quantisation kernel's for FP8 / FP4)
    "split_k_min": (False, "exp", 512.0),  # BF16 split-K: smallest K slice per split
    "wave_q": (False, "sigmoid", 0.5),  # 0: perfect load balance (stream-K), 1: whole waves
    "mem_frac_small": (False, "sigmoid", 0.95),  # bandwidth fraction for transfers << mem_size_bytes
    "mem_size_bytes": (False, "exp", 50e6),  # size over which the bandwidth fraction moves small -> large
    "overlap_p": (False, "exp1", 2.0),  # compute / memory overlap norm, >= 1
    "quant_mem_frac": (False, "sigmoid", 0.6),  # bandwidth fraction of the activation-quantisation pass
    "fp8_mis_amp": (False, "exp", 0.3),  # FP8 misaligned-M compute penalty amplitude
    "fp8_mis_m": (False, "exp", 1000.0),  # ... and the M over which it decays
}


def _to_free(v: float, tr: str) -> float:
    f = {"sigmoid": lambda x: np.log(x / (1 - x)), "exp": np.log, "exp1": lambda x: np.log(x - 1.0)}
    return float(f[tr](v))


def init_params() -> dict[str, jax.Array]:
    return {k: jnp.full((3 if per else 1,), _to_free(v, tr), jnp.float32) for k, (per, tr, v) in PARAMS.items()}


def constrain(theta: dict[str, jax.Array]) -> dict[str, jax.Array]:
    f = {"sigmoid": jax.nn.sigmoid, "exp": jnp.exp, "exp1": lambda z: 1.0 + jnp.exp(z)}
    return {k: f[PARAMS[k][1]](v) for k, v in theta.items()}


def gemm_time_s(v: dict[str, jax.Array], m, n, k, d, peaks, bw, sms):
    """Predicted time (s) of a GEMM (m tokens x k) @ (k x n) with weight dtype index d (0 bf16, 1 fp8, 2 fp4),
    including the BF16 -> FP8/FP4 activation-quantisation pass. `v`: constrained parameters (`constrain`);
    `peaks`: dense peak FLOP/s per dtype index; `bw`: HBM bytes/s; `sms`: SM count. Never below
    max(2mnk / peak, bytes / bw)."""
    p = {kk: (x[d] if x.shape[0] == 3 else x[0]) for kk, x in v.items()}
    wb = jnp.asarray(OPERAND_BYTES)[d]
    tm, tn = jnp.asarray(TILE_M)[d], jnp.asarray(TILE_N)[d]
    peak = peaks[d]
    # tiles, split-K (BF16 only), waves
    tiles = jnp.ceil(m / tm) * jnp.ceil(n / tn)
    split = jnp.where(d == 0, jnp.clip(sms / tiles, 1.0, jnp.maximum(k / p["split_k_min"], 1.0)), 1.0)
    w_soft = tiles * split / sms
    w_hard = jnp.maximum(jnp.ceil(w_soft - 1e-4), w_soft)
    waves = w_soft + p["wave_q"] * (w_hard - w_soft)
    k_tile = k / split
    # Hopper FP8 kernels slow down when M is not a power of two (fitted amplitude is ~0 where absent)
    pow2 = jnp.exp2(jnp.ceil(jnp.log2(jnp.maximum(m, 1.0)) - 1e-4))
    mis = jnp.where((d == 1) & (m > MIS_GATE_M), (pow2 - m) / pow2 * jnp.exp(-m / p["fp8_mis_m"]), 0.0)
    t_c = (waves * sms * 2.0 * tm * tn * k_tile / (peak * p["compute_frac"])
           * (1.0 + p["k_prologue"] / k_tile) * (1.0 + p["fp8_mis_amp"] * mis))
    # memory
    bytes_ = n * k * wb + m * (k + n) * ACT_BYTES
    mf = p["mem_frac"] + (p["mem_frac_small"] - p["mem_frac"]) * jnp.exp(-bytes_ / p["mem_size_bytes"])
    t_m = bytes_ / (bw * mf)
    top = jnp.maximum(t_c, t_m)
    q = p["overlap_p"]
    work = top * ((t_c / top) ** q + (t_m / top) ** q) ** (1.0 / q)
    t_quant = jnp.where(d > 0, m * k * (ACT_BYTES + wb) / (bw * p["quant_mem_frac"]), 0.0)
    return work + t_quant + p["latency_s"]


def roofline_s(m, n, k, d, peaks, bw):
    wb = jnp.asarray(OPERAND_BYTES)[d]
    return jnp.maximum(2.0 * m * n * k / peaks[d], (n * k * wb + m * (k + n) * ACT_BYTES) / bw)


def load(system: str, data: str):
    df, _ = C.load_table(system, None, data)
    held = heldout_mask(df)
    sel = (df["op"] == "gemm").to_numpy()
    g, held = df[sel], held[sel]
    cols = {c: g[c].to_numpy(np.float32) for c in ("m", "n", "k")}
    cols["d"] = g["dtype"].map({n: i for i, n in enumerate(DTYPES)}).to_numpy(np.int32)
    cols["t"] = (g["latency_ms"].to_numpy(np.float64) * 1e-3).astype(np.float32)
    return cols, held


def fit_system(system: str, data: str, steps: int, lr: float, max_fit_rows: int, seed: int = 0):
    cols, held = load(system, data)
    hw = presets.load_hardware(system, calibrated=False)
    peaks = jnp.asarray([hw.bf16_flop_per_s, hw.fp8_flop_per_s, hw.fp4_flop_per_s], jnp.float32)
    bw = jnp.float32(hw.hbm_bytes_per_s)
    sms = jnp.float32(SMS[system])
    fit_idx = np.where(~held)[0]
    if max_fit_rows and len(fit_idx) > max_fit_rows:
        fit_idx = np.sort(np.random.default_rng(seed).choice(fit_idx, max_fit_rows, replace=False))
    fm, fn, fk, fd = (jnp.asarray(cols[c][fit_idx]) for c in "mnkd")
    flogt = jnp.log(jnp.asarray(cols["t"][fit_idx]))

    def loss(theta):
        t = gemm_time_s(constrain(theta), fm, fn, fk, fd, peaks, bw, sms)
        return jnp.mean((jnp.log(t) - flogt) ** 2)

    opt = optax.adam(lr)
    vg = jax.value_and_grad(loss)

    @jax.jit
    def run(theta):
        def body(carry, _):
            th, st = carry
            val, g = vg(th)
            g = jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), g)
            upd, st = opt.update(g, st, th)
            return (optax.apply_updates(th, upd), st), val

        (th, _), vals = jax.lax.scan(body, (theta, opt.init(theta)), None, length=steps)
        return th, vals

    t0 = time.perf_counter()
    theta, _vals = run(init_params())
    final_loss = float(loss(theta))
    fit_s = time.perf_counter() - t0
    v = constrain(theta)
    args = [jnp.asarray(cols[c]) for c in "mnkd"]
    pred = np.asarray(jax.jit(gemm_time_s)(v, *args, peaks, bw, sms), np.float64)
    roof = np.asarray(roofline_s(*args, peaks, bw), np.float64)
    meas = cols["t"].astype(np.float64)
    ape = np.abs(pred / meas - 1.0) * 100.0
    signed = (pred / meas - 1.0) * 100.0
    hi = np.where(held)[0]
    res = {"system": system, "n_fit": len(fit_idx), "n_held": len(hi), "fit_msle": final_loss,
           "held_mape": np.median(ape[hi]), "held_p90": np.percentile(ape[hi], 90),
           "held_signed": np.median(signed[hi]), "fit_mape": np.median(ape[np.where(~held)[0]]),
           "below_roofline": int((pred < roof * (1 - 1e-5)).sum()), "fit_s": fit_s}
    for i, name in enumerate(DTYPES):
        s = hi[cols["d"][hi] == i]
        res[name] = np.median(ape[s]) if len(s) else float("nan")
    values = {kk: np.asarray(x).tolist() for kk, x in v.items()}
    return res, values


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--max-fit-rows", type=int, default=0, help="subsample the fit rows (0: all)")
    args = ap.parse_args()
    jax.config.update("jax_platform_name", "cpu")
    rows, params = [], {}
    for system in args.systems.split(","):
        res, values = fit_system(system, args.data, args.steps, args.lr, args.max_fit_rows)
        rows.append(res)
        params[system] = values
        print(f"{system}: held-out median APE {res['held_mape']:.2f} % (fit {res['fit_s']:.1f} s)", flush=True)
    print("\n| system | fit rows | held rows | held median APE % | bf16 | fp8 | fp4 | held p90 % "
          "| held median signed % | fit median APE % | fit MSLE | rows below roofline | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['n_fit']} | {r['n_held']} | {r['held_mape']:.2f} | {r['bf16']:.2f} "
              f"| {r['fp8']:.2f} | {r['fp4']:.2f} | {r['held_p90']:.1f} | {r['held_signed']:+.2f} "
              f"| {r['fit_mape']:.2f} | {r['fit_msle']:.4f} | {r['below_roofline']} | {r['fit_s']:.1f} |")
    print("\nfitted parameters (per-dtype ones as [bf16, fp8, fp4]; fp4 entries unused on Hopper):")
    for name in PARAMS:
        cells = []
        for system in params:
            x = params[system][name]
            cells.append(f"{system}=" + ("[" + ", ".join(f"{y:.4g}" for y in x) + "]" if len(x) > 1 else f"{x[0]:.4g}"))
        print(f"  {name}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
