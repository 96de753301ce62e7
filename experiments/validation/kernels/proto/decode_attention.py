"""Prototype: a richer parametric decode-attention kernel-time model, fitted per system.

Self-contained: loads AIConfigurator's generation_attention / generation_mla rows, fits the model below on the
80 % fit rows (held == False) with the mean squared log error (each op weighted equally), and prints the
held-out median absolute % error per system, op and KV dtype (plus residual maps with --maps).

    python experiments/validation/kernels/proto/decode_attention.py [--data DIR] [--systems ...] [--maps]

Model (per op: GQA and MLA have their own parameters; see decode_attention.md):

    t = L0[path] + L_split * r / (r + c_split)                      fixed launch + split-KV reduction latency
        + (F^p + M^p + C^p)^(1/p)                                   overlapped per-item / memory / compute work
    F = B * U * tau                                                  per work item cost (GQA: U = KV heads,
                                                                     MLA: U = 1, tau linear in query heads)
    M = bytes / (bw * mf[path] * occ),  occ = n / (n + n_half),      n = B * U * S(r) CTAs (S: KV splits)
    C = flops / (peak_bf16 * cf)

r = KV positions read (context, window-truncated). Every fraction is a sigmoid (≤ 1) and every additive term
is ≥ 0, so t ≥ max(flops / peak, bytes / bw) holds by construction.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

jax.config.update("jax_platform_name", "cpu")

DEFAULT_DATA = "/work/aicv/lib/python3.11/site-packages/aiconfigurator_core/systems/data"
SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
MAX_FIT_ROWS = 20_000  # per op and system (subsample of the fit rows; held-out rows are all evaluated)
STEPS, LR = 1500, 0.05
TILE = 128.0  # KV positions per tile of the decode kernel (fixed)
MLA_KV_ELEMS = 576.0  # kv_lora 512 + rope 64: the latent every request reads per position
MLA_QK, MLA_V = 576.0, 512.0  # absorbed MLA: scores over 576 dims, values over 512


# --------------------------------------------------------------------------------------------------
# Parameters: name -> (coordinate, start). "logit": fraction in (0, 1); "log": > 0; "log1": ≥ 1.
# --------------------------------------------------------------------------------------------------

GQA_PARAMS = {
    "L0_bf16": ("log", 8e-6), "L0_fp8": ("log", 6e-6),           # launch latency: generic / FP8-GQA path (s)
    "L_split": ("log", 2e-6), "c_split": ("log", 512.0),         # split-KV reduction latency, its half context
    "tau_mha": ("log", 10e-9),                                   # per-item cost, MHA path (group 1) (s)
    "tau_gqa_bf16": ("log", 30e-9), "tau_gqa_fp8": ("log", 10e-9),  # per-item cost, GQA path
    "tau_qd": ("log", 0.3e-9),                                   # per-item cost per query head x 128 dims (s)
    "alpha": ("logit", 0.3),                                     # head-dim exponent of the per-item cost
    "tau_tile": ("log", 5e-9),                                   # per-item cost per KV tile of TILE positions
    "rb_half": ("log", 32.0),                                    # KV row bytes (head_dim x kv bytes) at half bandwidth
    "mf_bf16": ("logit", 0.9), "mf_fp8_mha": ("logit", 0.55), "mf_fp8_gqa": ("logit", 0.85),
    "n_half": ("log", 100.0), "chunk": ("log", 1024.0),          # occupancy: CTAs at half rate, KV split size
    "cf": ("logit", 0.1), "p": ("log1", 2.0),
    "gd_heavy": ("log", 2560.0), "k_heavy": ("log", 1.0),        # FP8 query tile (group x head_dim) over budget
}
MLA_PARAMS = {
    "L0": ("log", 12e-6), "L_split": ("log", 2e-6), "c_split": ("log", 2048.0),
    "tau0": ("log", 50e-9), "tau_h": ("log", 1.5e-9),           # per-request cost: fixed + per query head
    "mf_bf16": ("logit", 0.9), "mf_fp8": ("logit", 0.65),
    "n_half": ("log", 30.0), "chunk": ("log", 2048.0), "smax": ("log", 32.0),
    "cf_bf16": ("logit", 0.6), "cf_fp8": ("logit", 0.7), "p": ("log1", 2.0),
}


def to_free(spec: dict) -> dict:
    out = {}
    for k, (c, v) in spec.items():
        if c == "logit":
            out[k] = jnp.asarray(np.log(v / (1 - v)), jnp.float32)
        elif c == "log1":
            out[k] = jnp.asarray(np.log(v - 1.0), jnp.float32)
        else:
            out[k] = jnp.asarray(np.log(v), jnp.float32)
    return out


def from_free(spec: dict, free: dict) -> dict:
    conv = {"logit": jax.nn.sigmoid, "log": jnp.exp, "log1": lambda z: 1.0 + jnp.exp(z)}
    return {k: conv[spec[k][0]](free[k]) for k in spec}


# --------------------------------------------------------------------------------------------------
# The model (pure JAX, float32, differentiable in the parameters)
# --------------------------------------------------------------------------------------------------


def _pnorm(a, b, c, p):
    """(a^p + b^p + c^p)^(1/p) for a, b, c ≥ 0, p ≥ 1; never below max(a, b, c)."""
    top = jnp.maximum(jnp.maximum(a, b), c)
    safe = jnp.maximum(top, 1e-30)
    s = (a / safe) ** p + (b / safe) ** p + (c / safe) ** p
    return jnp.maximum(safe * s ** (1.0 / p), top)


def _splits(read, chunk, smax):
    """KV chunks per work item (multi-block / split-KV): 1 + read / chunk, saturating smoothly at smax."""
    x = read / chunk
    return 1.0 + x / (1.0 + x / smax)


def gqa_time(q: dict, batch, read, heads, kv_heads, head_dim, kv_bytes, peak, bw):
    """Decode GQA / MHA kernel time (s). q: constrained parameters. kv_bytes 2 (BF16) or 1 (FP8)."""
    fp8 = kv_bytes < 1.5
    group = heads / kv_heads
    mha = group < 1.5
    xqa = fp8 & ~mha & (head_dim >= 128.0)  # the FP8 grouped-query kernel path (launch latency L0_fp8)
    qtile = group * head_dim
    heavy = jnp.where(fp8 & ~mha, jax.nn.sigmoid((qtile - q["gd_heavy"]) / (0.1 * q["gd_heavy"])), 0.0)
    slow = 1.0 + q["k_heavy"] * heavy
    items = batch * kv_heads
    d = head_dim / 128.0
    tau_path = jnp.where(mha, q["tau_mha"], jnp.where(fp8, q["tau_gqa_fp8"], q["tau_gqa_bf16"]))
    tau = tau_path * d ** q["alpha"] * slow + q["tau_qd"] * group * d
    F = items * (tau + q["tau_tile"] * jnp.ceil(read / TILE))
    bytes_ = items * read * 2.0 * head_dim * kv_bytes
    flops = 4.0 * batch * read * heads * head_dim
    mf = jnp.where(fp8, jnp.where(mha, q["mf_fp8_mha"], q["mf_fp8_gqa"]), q["mf_bf16"])
    row = head_dim * kv_bytes
    mf = mf * row / (row + q["rb_half"]) / slow
    n = items * (1.0 + read / q["chunk"])
    occ = n / (n + q["n_half"])
    M = bytes_ / (bw * jnp.clip(mf * occ, 1e-6, 1.0))
    C = flops / (peak * jnp.clip(q["cf"], 1e-6, 1.0))
    L = jnp.where(xqa, q["L0_fp8"], q["L0_bf16"]) + q["L_split"] * read / (read + q["c_split"])
    return L + _pnorm(F, M, C, q["p"])


def mla_time(q: dict, batch, read, heads, kv_bytes, peak, bw):
    """Decode MLA (absorbed, latent 576 read once per request) kernel time (s)."""
    fp8 = kv_bytes < 1.5
    F = batch * (q["tau0"] + q["tau_h"] * heads)
    bytes_ = batch * read * MLA_KV_ELEMS * kv_bytes
    flops = 2.0 * batch * read * heads * (MLA_QK + MLA_V)
    mf = jnp.where(fp8, q["mf_fp8"], q["mf_bf16"])
    n = batch * _splits(read, q["chunk"], q["smax"])
    occ = n / (n + q["n_half"])
    M = bytes_ / (bw * jnp.clip(mf * occ, 1e-6, 1.0))
    C = flops / (peak * jnp.clip(jnp.where(fp8, q["cf_fp8"], q["cf_bf16"]), 1e-6, 1.0))
    L = q["L0"] + q["L_split"] * read / (read + q["c_split"])
    return L + _pnorm(F, M, C, q["p"])


def roofline(op, batch, read, heads, kv_heads, head_dim, kv_bytes, peak, bw):
    if op == "generation_mla":
        return np.maximum(2.0 * batch * read * heads * (MLA_QK + MLA_V) / peak,
                          batch * read * MLA_KV_ELEMS * kv_bytes / bw)
    return np.maximum(4.0 * batch * read * heads * head_dim / peak,
                      batch * kv_heads * read * 2 * head_dim * kv_bytes / bw)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def load(data: str, systems) -> pd.DataFrame:
    from jaxsim import calibrate as C
    from jaxsim.calibrate.tables import heldout_mask

    out = []
    for s in systems:
        df, _ = C.load_table(s, None, data)
        df = df.assign(held=heldout_mask(df), system=s)
        out.append(df[df.op.isin(["generation_attention", "generation_mla"])])
    r = pd.concat(out, ignore_index=True)
    r["window"] = r["window"].fillna(0.0)
    r["ctx"] = r["prefix"] + r["seq_len"]
    r["read"] = np.where(r["window"] > 0, np.minimum(r["ctx"], r["window"]), r["ctx"])
    r["kvb"] = r["kv_dtype"].map({"bf16": 2.0, "fp8": 1.0})
    r["kv_heads"] = r["kv_heads"].fillna(1.0)
    r["head_dim"] = r["head_dim"].fillna(0.0)
    r["t"] = r["latency_ms"] * 1e-3
    return r


def hw_consts(system: str):
    from jaxsim.presets import load_hardware

    hw = load_hardware(system, calibrated=False)
    return float(hw.bf16_flop_per_s), float(hw.hbm_bytes_per_s)


def arrays(part: pd.DataFrame, op: str):
    def f(c):
        return jnp.asarray(part[c].to_numpy(np.float32))
    if op == "generation_mla":
        return (f("batch"), f("read"), f("heads"), f("kvb"))
    return (f("batch"), f("read"), f("heads"), f("kv_heads"), f("head_dim"), f("kvb"))


# --------------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------------


def fit_system(r: pd.DataFrame, system: str, steps: int = STEPS, seed: int = 0):
    peak, bw = hw_consts(system)
    s = r[r.system == system]
    rng = np.random.default_rng(seed)
    fit_sets = {}
    for op in ("generation_attention", "generation_mla"):
        part = s[(s.op == op) & ~s.held]
        if len(part) > MAX_FIT_ROWS:
            part = part.iloc[np.sort(rng.choice(len(part), MAX_FIT_ROWS, replace=False))]
        fit_sets[op] = (arrays(part, op), jnp.log(jnp.asarray(part["t"].to_numpy(np.float32))))
    params = {"gqa": to_free(GQA_PARAMS), "mla": to_free(MLA_PARAMS)}

    def loss(pr):
        qg, qm = from_free(GQA_PARAMS, pr["gqa"]), from_free(MLA_PARAMS, pr["mla"])
        xg, yg = fit_sets["generation_attention"]
        xm, ym = fit_sets["generation_mla"]
        eg = jnp.log(gqa_time(qg, *xg, peak, bw)) - yg
        em = jnp.log(mla_time(qm, *xm, peak, bw)) - ym
        return 0.5 * jnp.mean(eg**2) + 0.5 * jnp.mean(em**2)

    opt = optax.adam(LR)
    state = opt.init(params)

    @jax.jit
    def run(params, state):
        def body(carry, _):
            p, st = carry
            l, g = jax.value_and_grad(loss)(p)
            up, st = opt.update(g, st, p)
            return (optax.apply_updates(p, up), st), l
        (params, state), ls = jax.lax.scan(body, (params, state), None, length=steps)
        return params, state, ls

    params, state, ls = run(params, state)
    q = {"gqa": from_free(GQA_PARAMS, params["gqa"]), "mla": from_free(MLA_PARAMS, params["mla"])}
    return q, float(ls[-1]), (peak, bw)


def predict(r: pd.DataFrame, q: dict, peak: float, bw: float) -> np.ndarray:
    out = np.full(len(r), np.nan)
    for op in ("generation_attention", "generation_mla"):
        m = (r.op == op).to_numpy()
        if not m.any():
            continue
        x = arrays(r[m], op)
        t = mla_time(q["mla"], *x, peak, bw) if op == "generation_mla" else gqa_time(q["gqa"], *x, peak, bw)
        out[m] = np.asarray(t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--maps", action="store_true", help="print residual maps of the held-out rows")
    args = ap.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.max_rows", 400)

    r = load(args.data, args.systems)
    rows, fitted = [], {}
    for system in args.systems:
        t0 = time.time()
        q, l, (peak, bw) = fit_system(r, system, args.steps)
        s = r[r.system == system].copy()
        s["pred"] = predict(s, q, peak, bw)
        for op in ("generation_attention", "generation_mla"):
            m = (s.op == op).to_numpy()
            rl = roofline(op, s.batch[m].to_numpy(), s.read[m].to_numpy(), s.heads[m].to_numpy(),
                          s.kv_heads[m].to_numpy(),
                          s.head_dim[m].to_numpy(), s.kvb[m].to_numpy(), peak, bw)
            assert np.all(s.pred[m].to_numpy() >= rl * (1 - 1e-5)), f"{system} {op}: below roofline"
        s["ape"] = 100 * np.abs(s.pred / s.t - 1)
        s["se"] = 100 * (s.pred / s.t - 1)
        fitted[system] = {k: {n: float(v) for n, v in d.items()} for k, d in q.items()}
        print(f"{system}: fit loss {l:.4f}, {time.time() - t0:.1f} s", flush=True)
        rows.append(s)
    res = pd.concat(rows)
    h = res[res.held]
    print("\nheld-out median APE % (rows) by system / op / kv dtype")
    tab = h.groupby(["op", "kv_dtype", "system"])["ape"].median().unstack("system")[list(args.systems)]
    print(tab.round(1))
    print("\nheld-out median APE % by system / op (both KV dtypes)")
    print(h.groupby(["op", "system"])["ape"].median().unstack("system")[list(args.systems)].round(1))
    print("\nfit-rows median APE % by system / op")
    print(res[~res.held].groupby(["op", "system"])["ape"].median().unstack("system")[list(args.systems)].round(1))
    print("\nheld-out 90th percentile APE % by system / op")
    print(h.groupby(["op", "system"])["ape"].quantile(0.9).unstack("system")[list(args.systems)].round(1))
    print("\nfitted parameters")
    for op in ("gqa", "mla"):
        print(pd.DataFrame({s: fitted[s][op] for s in args.systems}).map(lambda v: f"{v:.4g}"))
    if args.maps:
        g = h[h.op == "generation_attention"].assign(group=lambda x: x.heads / x.kv_heads)
        for key in (["kv_dtype", "group"], ["kv_dtype", "head_dim"], ["kv_dtype", "batch"], ["kv_dtype", "prefix"],
                    ["kv_dtype", "kv_heads"], ["kv_dtype", "window"]):
            print(f"\nGQA median signed % error by {key} x system")
            print(g.groupby([*key, "system"])["se"].median().unstack("system")[list(args.systems)].round(1))
        ml = h[h.op == "generation_mla"]
        for key in (["kv_dtype", "heads"], ["kv_dtype", "batch"], ["kv_dtype", "prefix"]):
            print(f"\nMLA median signed % error by {key} x system")
            print(ml.groupby([*key, "system"])["se"].median().unstack("system")[list(args.systems)].round(1))


if __name__ == "__main__":
    main()
