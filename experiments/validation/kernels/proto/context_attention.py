"""Prototype: a tile / occupancy-aware kernel-time form for prefill (context) attention, GQA and MLA.

Fits the form per system on the 80 % fit rows (`heldout_mask == False`) of AIConfigurator's TRT-LLM
context_attention / context_mla tables with the mean squared log error, and prints the held-out median
absolute % error per system, op and dtype (formula and results: context_attention.md next to this file).

    python experiments/validation/kernels/proto/context_attention.py [--data DIR] [--systems a,b] [--steps N]

Self-contained: only jaxsim.calibrate's table loader and held-out split are imported.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from jaxsim import calibrate as C
from jaxsim.calibrate.tables import heldout_mask

jax.config.update("jax_platform_name", "cpu")

DATA = "/work/aicv/lib/python3.11/site-packages/aiconfigurator_core/systems/data"
SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
# Fixed hardware constants: dense BF16 / FP8 tensor peaks (flop/s), HBM bandwidth (B/s) as in
# specs/hardware/<system>.toml, and SM counts (H100 / H200 SXM: 132, GH100 as shipped, NVIDIA H100
# whitepaper; B200: 2 dies x 74 = 148, Chips and Cheese "Nvidia's B200: Keeping the CUDA Juggernaut Rolling").
HW = {
    "h100-sxm": dict(bf16=989e12, fp8=1979e12, bw=3.35e12, sms=132.0),
    "h200-sxm": dict(bf16=989e12, fp8=1979e12, bw=4.8e12, sms=132.0),
    "b200": dict(bf16=2250e12, fp8=4500e12, bw=8.0e12, sms=148.0),
    "gb200-nvl72": dict(bf16=2500e12, fp8=5000e12, bw=8.0e12, sms=148.0),
}
TILE = 128.0  # query rows and KV columns of one FMHA tile (a CTA owns one query tile of one head)
MLA_DQK, MLA_DV = 192.0, 128.0  # DeepSeek-V3 MLA prefill: q/k head dim nope 128 + rope 64, v head dim 128
N_FIT = 20000  # fit rows per system (subsample; all MLA fit rows kept)
BYTES = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5}

# --------------------------------------------------------------------------------------------------
# Parameters: name -> (coordinate, start). "logit": a fraction in (0, 1); "log": > 0; "log1": >= 1.
# Times in seconds; `softmax_s` is GPU-seconds per attention score (the non-tensor-core work of one score
# spread over the whole GPU); `cta_s` / `cta_dim_s` are SM-seconds of fixed work per CTA.
# --------------------------------------------------------------------------------------------------
PARAMS = {
    "cf_bf16": ("logit", 0.6),          # tensor-core fraction of BF16 peak, BF16 Q/K/V
    "cf_bf16_kv8": ("logit", 0.8),      # same, BF16 math with an FP8 KV cache (of the BF16 peak)
    "cf_fp8": ("logit", 0.4),           # FP8 math (of the FP8 peak)
    "softmax_s": ("log", 1.5e-13),      # per-score softmax / exp / mask cost, GPU-seconds
    "overlap_q": ("log1", 2.0),         # ||(mma, softmax)||_q: 1 = serial, inf = fully overlapped
    "cta_s": ("log", 1.0e-6),           # fixed per-CTA cost (prologue, Q load, epilogue), SM-seconds
    "kv_step_s": ("log", 0.1e-6),       # fixed cost of one KV-tile iteration (barriers, rescale), SM-seconds
    "sched_p": ("log1", 4.0),           # ||(balanced work + tail, critical CTA)||_p: inf = max
    "tail_frac": ("logit", 0.5),        # last-wave tail, in mean CTA times (list scheduling: <= 1)
    "diag_frac": ("log", 0.5),          # extra work of the masked diagonal tile of every CTA, in tiles
    "mem_frac": ("logit", 0.7),         # HBM fraction for the kernel's compulsory bytes
    "pre_frac": ("logit", 0.5),         # HBM fraction of the QKV preprocessing pass (RoPE, KV-cache write)
    "latency_s": ("log", 12e-6),        # fixed per-call latency (launches of the op's kernels)
    "window_extra": ("log", 512.0),     # sliding-window kernels visit w + this many KV positions (tokens)
    "mla_cf_bf16": ("logit", 0.6),      # MLA: tensor fraction, BF16 KV
    "mla_cf_kv8": ("logit", 0.8),       # MLA: tensor fraction, FP8 KV (of the BF16 peak)
    "mla_cta_s": ("log", 1.0e-6),       # MLA: fixed per-CTA cost, SM-seconds
    "mla_latency_s": ("log", 12e-6),    # MLA: fixed per-call latency
    "mla_kv8_cta_s": ("log", 1.0e-6),   # MLA with FP8 KV: fixed per-CTA cost, SM-seconds
}
NAMES = tuple(PARAMS)


def to_free(values: dict[str, float]) -> dict[str, jnp.ndarray]:
    out = {}
    for k, (coord, _) in PARAMS.items():
        v = values[k]
        z = np.log(v / (1 - v)) if coord == "logit" else np.log(v) if coord == "log" else np.log(v - 1.0)
        out[k] = jnp.float32(z)
    return out


def from_free(z: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    conv = {"logit": jax.nn.sigmoid, "log": jnp.exp, "log1": lambda x: 1.0 + jnp.exp(x)}
    return {k: conv[PARAMS[k][0]](z[k]) for k in NAMES}


# --------------------------------------------------------------------------------------------------
# Features (computed once per row; the integer tile counts are inputs, not parameters)
# --------------------------------------------------------------------------------------------------


def _tri(n):
    return n * (n + 1.0) / 2.0


def causal_scores(s, w):
    """Σ_{i=1..s} min(i, w): attention scores of one causal sequence of s tokens (w = 0: no window)."""
    wl = np.where(w > 0, w, np.inf)
    return np.where(s <= wl, _tri(s), _tri(np.minimum(wl, s)) + (s - np.minimum(wl, s)) * np.minimum(wl, s))


def pow2_ceil(x):
    return 2.0 ** np.ceil(np.log2(np.maximum(x, 1.0)))


def features(d: pd.DataFrame, hw: dict) -> dict[str, np.ndarray]:
    mla = (d.op == "context_mla").to_numpy()
    b, s, h = (d[c].to_numpy(float) for c in ("batch", "seq_len", "heads"))
    kvh = np.where(mla, h, d["kv_heads"].fillna(1).to_numpy(float))
    hd = d["head_dim"].fillna(0).to_numpy(float)
    dqk, dv = np.where(mla, MLA_DQK, hd), np.where(mla, MLA_DV, hd)
    w = d["window"].fillna(0).to_numpy(float)
    cb, kvb = d["dtype"].map(BYTES).to_numpy(float), d["kv_dtype"].map(BYTES).to_numpy(float)
    # Exact causal FLOPs (QKᵀ and PV, 2 flops per MAC) and the compulsory bytes (Q, K, V in, O out, once).
    scores = b * h * causal_scores(s, w)
    flops = 2.0 * (dqk + dv) * scores
    bytes_min = b * s * (h * dqk * cb + h * dv * 2.0 + kvh * (dqk + dv) * kvb)
    peak = np.where(cb < 2, hw["fp8"], hw["bf16"])
    # GQA head dims run padded to the kernel's power-of-two head size (192 -> 256); MLA's kernel is native.
    dpad = np.where(mla, MLA_DQK + MLA_DV, 2.0 * pow2_ceil(hd))
    nq = np.ceil(s / TILE)
    # A one-tile sequence computes 128 query rows (padded) x round_up(s, 16) keys.
    area1 = np.where(nq > 1, 1.0, np.ceil(s / 16.0) * 16.0 / TILE)
    combo = np.where(mla, np.where(kvb < 2, 4, 3), np.where(cb < 2, 2, np.where(kvb < 2, 1, 0)))
    # QKV preprocessing pass (RoPE on Q and K, K/V written to the cache at the KV precision).
    pre_bytes = b * s * (h * dqk * 2.0 * 2.0 + kvh * (dqk + dv) * (2.0 + kvb))
    f = dict(flops=flops, bytes_min=bytes_min, peak=peak, bh=b * h, nq=nq, area1=area1, window=w,
             dpad=dpad, combo=combo.astype(float), pre_bytes=pre_bytes, mla=mla.astype(float),
             roofline=np.maximum(flops / peak, bytes_min / hw["bw"]))
    return {k: np.asarray(v, dtype=np.float32) for k, v in f.items()}


# --------------------------------------------------------------------------------------------------
# The kernel-time form
# --------------------------------------------------------------------------------------------------


def pnorm(a, b, p):
    """(a^p + b^p)^(1/p) >= max(a, b) for p >= 1, computed stably."""
    m = jnp.maximum(jnp.maximum(a, b), 1e-30)
    return m * ((a / m) ** p + (b / m) ** p) ** (1.0 / p)


def context_attention_s(v: dict, f: dict, sms: float, bw: float) -> jnp.ndarray:
    """Predicted time (s) of prefill attention rows `f` with parameter values `v` (see the .md file)."""
    combo, mla, nq = f["combo"], f["mla"], f["nq"]
    # KV tiles each query tile visits: all up to the diagonal (causal), or a band of (w + extra) / T + 1.
    band = jnp.where(f["window"] > 0, (f["window"] + v["window_extra"]) / TILE + 1.0, 1e9)
    band = jnp.minimum(band, nq)
    tiles = jnp.where(nq <= band, 0.5 * nq * (nq + 1.0), 0.5 * band * (band + 1.0) + (nq - band) * band)
    tiles = tiles * f["area1"]
    longest = band * f["area1"]
    cf = jnp.select([combo == 0, combo == 1, combo == 2, combo == 3],
                    [v["cf_bf16"], v["cf_bf16_kv8"], v["cf_fp8"], v["mla_cf_bf16"]], v["mla_cf_kv8"])
    cf = jnp.clip(cf, 1e-3, 1.0)
    # One KV tile of one CTA on one SM: tensor-core time ⊕_q softmax time (the SM is 1/sms of the GPU),
    # plus a fixed per-iteration cost.
    mma = TILE * TILE * 2.0 * f["dpad"] / (f["peak"] * cf) * sms
    soft = TILE * TILE * v["softmax_s"] * sms
    t_tile = pnorm(mma, soft, v["overlap_q"]) + v["kv_step_s"] * f["dpad"] / 256.0
    cta = jnp.where(mla > 0, jnp.where(combo == 4, v["mla_kv8_cta_s"], v["mla_cta_s"]), v["cta_s"])
    cta = cta + v["diag_frac"] * f["area1"] * t_tile
    per_bh = tiles * t_tile + nq * cta                       # SM-time of one (sequence, head)
    balanced = f["bh"] * per_bh / sms                        # all SMs busy
    tail = v["tail_frac"] * per_bh / nq                      # a partial last wave: a fraction of a mean CTA
    critical = longest * t_tile + cta                        # the heaviest CTA (a full diagonal row)
    t_attn = pnorm(balanced + tail, critical, v["sched_p"])
    t_mem = f["bytes_min"] / (bw * jnp.clip(v["mem_frac"], 1e-3, 1.0))
    work = jnp.maximum(t_attn, t_mem)
    pre = f["pre_bytes"] / (bw * jnp.clip(v["pre_frac"], 1e-3, 1.0))
    lat = jnp.where(mla > 0, v["mla_latency_s"], v["latency_s"])
    return work + pre + lat


# --------------------------------------------------------------------------------------------------
# Fit and report
# --------------------------------------------------------------------------------------------------


def fit_system(system: str, data: str, steps: int, seed: int = 0):
    hw = HW[system]
    df, _ = C.load_table(system, None, data)
    held_all = heldout_mask(df)
    keep = df["op"].isin(["context_attention", "context_mla"]).to_numpy()
    d, held = df[keep].reset_index(drop=True), held_all[keep]
    f = features(d, hw)
    y = d["latency_ms"].to_numpy(np.float32) * 1e-3
    rng = np.random.default_rng(seed)
    fit_idx = np.flatnonzero(~held)
    mla_idx = fit_idx[f["mla"][fit_idx] > 0]
    gqa_idx = fit_idx[f["mla"][fit_idx] == 0]
    gqa_idx = rng.choice(gqa_idx, size=min(len(gqa_idx), N_FIT - len(mla_idx)), replace=False)
    idx = np.concatenate([gqa_idx, mla_idx])
    # Pad to N_FIT rows so every system reuses one compiled step; ops weighted equally.
    wts = np.where(f["mla"][idx] > 0, 1.0 / len(mla_idx), 1.0 / len(gqa_idx)).astype(np.float32) / 2.0
    pad = N_FIT - len(idx)
    idx = np.concatenate([idx, np.full(pad, idx[0])])
    wts = np.concatenate([wts, np.zeros(pad, np.float32)])
    ff = {k: jnp.asarray(a[idx]) for k, a in f.items()}
    logy = jnp.asarray(np.log(y[idx]))
    consts = jnp.asarray([hw["sms"], hw["bw"]], jnp.float32)

    z0 = to_free({k: PARAMS[k][1] for k in NAMES})
    state = _OPT.init(z0)  # optax Adam, learning rate LR (one compiled step for every system)
    z, t0 = z0, time.time()
    for _ in range(steps):
        z, state, loss = _step(z, state, ff, logy, jnp.asarray(wts), consts)
    fit_s = time.time() - t0
    vals = {k: float(x) for k, x in from_free(z).items()}
    pred = np.asarray(_predict(z, {k: jnp.asarray(a) for k, a in f.items()}, consts))
    assert np.all(pred >= f["roofline"] * (1 - 1e-5)), "below roofline"
    d = d.assign(pred_ms=pred * 1e3, held=held)
    return d, vals, float(loss), fit_s


def _predict(z, f, consts):
    return context_attention_s(from_free(z), f, consts[0], consts[1])


LR = 0.05
_OPT = optax.adam(LR)


@jax.jit
def _step(z, state, f, logy, w, consts):
    def loss_fn(z):
        r = jnp.log(_predict(z, f, consts)) - logy
        return jnp.sum(w * r * r)
    loss, g = jax.value_and_grad(loss_fn)(z)
    upd, state = _OPT.update(g, state, z)
    return optax.apply_updates(z, upd), state, loss


def ape(d):
    return (100.0 * np.abs(d.pred_ms / d.latency_ms - 1.0)).median()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--residuals", action="store_true", help="print held-out residual maps")
    args = ap.parse_args()
    rows, params = [], {}
    for system in args.systems.split(","):
        t0 = time.time()
        d, vals, loss, fit_s = fit_system(system, args.data, args.steps)
        params[system] = vals
        h = d[d.held]
        for (op, dt, kv), g in h.groupby(["op", "dtype", "kv_dtype"]):
            rows.append(dict(system=system, op=op, dtype=f"{dt}/{kv}", n=len(g), ape=ape(g),
                             p90=(100 * np.abs(g.pred_ms / g.latency_ms - 1)).quantile(0.9),
                             bias=(100 * (g.pred_ms / g.latency_ms - 1)).median()))
        for op, g in h.groupby("op"):
            rows.append(dict(system=system, op=op, dtype="all", n=len(g), ape=ape(g),
                             p90=(100 * np.abs(g.pred_ms / g.latency_ms - 1)).quantile(0.9),
                             bias=(100 * (g.pred_ms / g.latency_ms - 1)).median()))
        fit_ape = ape(d[~d.held])
        print(f"{system}: loss {loss:.4f}, fit-rows APE {fit_ape:.1f} %, fit {fit_s:.1f} s, "
              f"total {time.time()-t0:.1f} s", flush=True)
        if args.residuals:
            residual_maps(h)
    res = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print("\nHeld-out median |APE| % (p90, median signed error %):")
    print(res.sort_values(["op", "dtype", "system"]).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print("\nFitted parameters:")
    print(pd.DataFrame(params).to_string(float_format=lambda x: f"{x:.4g}"))


def residual_maps(h):
    h = h.assign(lr=100 * (h.pred_ms / h.latency_ms - 1))
    g = h[h.op == "context_attention"]
    for col in ("seq_len", "batch", "heads", "head_dim", "kv_heads", "window"):
        print(g.pivot_table(index=col, columns=["dtype", "kv_dtype"], values="lr", aggfunc="median").round(1).T
              .to_string())
    m = h[h.op == "context_mla"]
    for col in ("seq_len", "batch", "heads"):
        print(m.pivot_table(index=col, columns="kv_dtype", values="lr", aggfunc="median").round(1).T.to_string())


if __name__ == "__main__":
    main()
