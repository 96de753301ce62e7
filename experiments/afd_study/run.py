"""The AFD design-space study of "How Far Can Disaggregation Go?", reproduced with jaxsim end to end.

    python experiments/afd_study/run.py            # everything (see README.md for the wall time we saw)
    python experiments/afd_study/run.py --quick    # one model, one system, one workload, small spaces (smoke)
    python experiments/afd_study/run.py --no-optimizer   # skip the optimiser comparison

Scenarios: 128 GPUs of B200 (HGX, 8-GPU NVLink domains), GB200 NVL72 (72-GPU NVLink domain) and H200 (HGX);
models DeepSeek-V3.2, Qwen3-235B-A22B, GPT-OSS-120B; workloads chat, coding, agentic-coding with their SLOs
(TTFT ≤ 50 / 100 / 150 ms, TPOT ≤ 15 ms). FP8 weights and KV everywhere; MTP (one draft token, 70 %
acceptance) swept on/off where the model ships an MTP layer; saturation load (every rank runs its batch).

Method. For each (model, system, workload) and each architecture (agg with chunked prefill, P/D, Agg+AFD,
P/D+AFD) every configuration of a design space (`jaxsim.sweep.DesignSpace`) is priced by `jaxsim.estimate`
(hard model). The TTFT and memory checks are applied on the device; TPOT is left open (target 1000 s) and
each chunk is reduced to its Pareto frontier of output tokens/s/GPU against tokens/s/user. Because the load is
saturation, metrics do not depend on the SLO, so the best configuration under any TPOT target T is the
frontier point of highest tokens/s/GPU with tokens/s/user ≥ 1/T: one pass gives the headline (T = 15 ms),
the Pareto plots and the SLO-tightness sweep (T = 10 … 100 ms).

Compilation. `jaxsim.sweep.sweep` closes over the workload and SLO, so each call compiles again. This script
builds the same per-row evaluation from public pieces (`DesignSpace.decode`, `sweep.build_config`,
`jaxsim.estimate`, `serve.report.flatten`) as one jitted function of (indices, hardware, workload, SLO): one
compilation per (model, architecture) serves all three systems, all workloads, the context-length study and
the what-if studies. `check_against_library_sweep` re-runs one scenario through `jaxsim.sweep.sweep` with the
real SLO and checks that both give the same best configurations.

Design spaces (`study_spaces`): agg and P/D are `jaxsim.sweep.default_spaces`. The AFD spaces widen the
defaults where the paper's splits need it: the attention group takes every size 1 … 127 (Agg+AFD) or a
dense set of sizes (P/D+AFD), not only powers of two, and micro-batches go to 8. The FFN group stays at
EP sizes that divide the routed experts (powers of two): the library's model requires it (see README).

Outputs (results/): best.csv, slo_tightness.csv, frontiers.csv, splits.csv, whatif.csv, optimizer.csv,
tables.md (every table of the README, generated), summary.json (machine, commit, timings, claim checks),
and the plots pareto_<model>.png, slo_<model>.png, split_vs_context.png.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxsim as js
from jaxsim import optimize as op
from jaxsim import sweep as sw
from jaxsim.batching import blocked_vmap
from jaxsim.serve.metrics import REASONS
from jaxsim.serve.report import flatten

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOTAL_GPUS = 128
MODELS = ("deepseek-v3.2", "qwen3-235b-a22b", "gpt-oss-120b")
SYSTEMS = ("b200", "gb200-nvl72", "h200-sxm")
WORKLOADS = ("chat", "coding", "agentic-coding")
ARCHS = ("agg", "disagg", "agg+afd", "disagg+afd")
LABEL = {"agg": "Agg (chunked prefill)", "disagg": "P/D", "agg+afd": "Agg+AFD", "disagg+afd": "P/D+AFD"}
TPOT_MS = 15.0  # the strict TPOT target of every workload
TPOT_SWEEP_MS = (10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 100)
OPEN_TPOT_S = 1000.0  # TPOT left open while sweeping; targets are applied to the frontier afterwards
CHUNK = 1 << 18  # configurations per jitted call
# Context-length study: the agentic workload's new input and output with the cached prefix varied.
CONTEXTS = (4096, 16384, 65536, 131072, 262144, 524288)
BYTES_GIB = float(2**30)

# Metric columns brought back to the host (the rest of `Metrics` is not needed here).
METRICS = ("ttft_s", "tpot_s", "out_tok_per_s_per_gpu", "tok_per_s_per_user", "requests_per_s", "gpus",
           "prefill_gpus", "decode_gpus", "attention_gpus", "ffn_gpus", "prefill_memory_bytes",
           "decode_memory_bytes", "attention_memory_bytes", "ffn_memory_bytes", "memory_frac", "decode_batch",
           "mfu", *(f"breakdown_{k}" for k in js.Breakdown.__dataclass_fields__))
TERMS = ("attention", "gemm", "moe", "dispatch", "combine", "tp_comm", "pp_comm", "other")


# --------------------------------------------------------------------------------------------------
# Specs: hardware and workloads under one static name each, so compilations are shared
# --------------------------------------------------------------------------------------------------


def load_model(name: str) -> js.Model:
    """A model preset renamed to one static name per attention kind: models of one kind whose design spaces
    coincide (Qwen3 and GPT-OSS: GQA, 64 heads, 128 experts, no MTP) share compilations. The name enters no
    formula."""
    return dataclasses.replace(js.load_model(name), name=f"study-{js.load_model(name).attention}")


def hardware(name: str) -> js.Hardware:
    """A hardware preset renamed to one static name: its numbers stay traced, so systems share compiles."""
    return dataclasses.replace(js.load_hardware(name), name="study-gpu")


def _f32(x: float) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def workload(prefix: float, inp: float, out: float) -> js.Workload:
    return js.Workload(name="study", prefix_tokens=float(prefix), input_tokens=float(inp), output_tokens=float(out))


def preset_workload(name: str) -> tuple[js.Workload, js.SLO]:
    w, slo = js.load_workload(name), js.load_slo(name)
    return workload(w.prefix_tokens, w.input_tokens, w.output_tokens), slo


# --------------------------------------------------------------------------------------------------
# Design spaces
# --------------------------------------------------------------------------------------------------


def study_spaces(m: js.Model, hw: js.Hardware, quick: bool = False) -> dict[str, sw.DesignSpace]:
    """agg and P/D: the library's default spaces; AFD: the defaults with a dense attention-group axis."""
    base = {s.arch: s for s in sw.default_spaces(m, hw, TOTAL_GPUS, modes=("agg", "disagg", "afd"))}
    experts = float(m.n_routed_experts)
    eps = [float(e) for e in (1, 2, 4, 8, 16, 32, 64, 128) if experts % e == 0]
    micro = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
    nextn = list(base["agg"].axes["nextn"])
    a = dict(base["agg+afd"].axes)
    a.update(attn_tp=[1.0, 2.0], attn_dp=[float(d) for d in range(1, TOTAL_GPUS)], ffn_ep=eps, micro_batches=micro,
             nextn=nextn)
    d = dict(base["disagg+afd"].axes)
    # P/D+AFD is the largest space (prefill layouts × AFD layouts): a dense attention axis, a thinner prefill one.
    d.update(attn_tp=[1.0, 2.0], attn_dp=[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 28.0, 32.0, 48.0, 64.0],
             ffn_ep=eps, micro_batches=micro[:5], nextn=nextn, p_dp=[1.0, 4.0, 16.0], prefill_batch=[1.0, 2.0])
    if quick:  # a thin slice of each space, for the smoke test
        a.update(attn_dp=[1.0, 2.0, 4.0, 8.0, 16.0, 28.0], micro_batches=[1.0, 2.0, 4.0])
        d.update(attn_dp=[2.0, 8.0, 28.0], micro_batches=[2.0, 4.0], p_tp=[2.0, 8.0], p_dp=[1.0, 4.0],
                 prefill_workers=[1.0, 2.0, 4.0])
        dis = dict(base["disagg"].axes)
        dis.update(p_tp=[2.0, 8.0], p_dp=[1.0, 4.0], prefill_workers=[1.0, 2.0, 4.0], d_dp=[4.0, 16.0, 32.0, 64.0])
        base["disagg"] = sw.DesignSpace("disagg", dis, TOTAL_GPUS)
    return {"agg": base["agg"], "disagg": base["disagg"],
            "agg+afd": sw.DesignSpace("agg+afd", a, TOTAL_GPUS),
            "disagg+afd": sw.DesignSpace("disagg+afd", d, TOTAL_GPUS)}


# --------------------------------------------------------------------------------------------------
# Evaluation: one compiled function per (model, space), traced in hardware, workload and SLO
# --------------------------------------------------------------------------------------------------


def make_evaluator(space: sw.DesignSpace) -> Any:
    """jit(indices, model, hw, w, slo) → columns (axis values, metrics, validity) of those configurations.
    The model's numbers are traced too, so models of one static name and space share the compilation."""
    invalid = REASONS.index("invalid_parallelism")

    def row(idx: jax.Array, m: js.Model, hw: js.Hardware, w: js.Workload, slo: js.SLO) -> dict[str, jax.Array]:
        v = space.decode(idx)
        cfg, ok = sw.build_config(space, v)
        r = js.estimate(m, hw, cfg, w, slo)
        flat = flatten(r)
        valid = ok & (r.reason != invalid) & (idx < space.size)
        out = dict(v)
        out.update({k: flat[k] for k in METRICS})
        out["valid"] = valid
        out["feasible"] = r.feasible & valid  # TTFT and memory (TPOT is left open)
        out["reason"] = jnp.where(valid, r.reason, invalid)
        return out

    return jax.jit(lambda idx, m, hw, w, slo: blocked_vmap(lambda i: row(i, m, hw, w, slo))(idx))


def _with_model(fn: Any, m: js.Model, idx: jax.Array, hw: js.Hardware, w: js.Workload, slo: js.SLO) -> Any:
    return fn(idx, m, hw, w, slo)


def pareto(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of points not dominated when x and y are both maximised (vectorised `sweep.pareto_mask`)."""
    keep = np.zeros(len(x), dtype=bool)
    if len(x) == 0:
        return keep
    order = np.lexsort((-y, -x))
    ys = y[order]
    prev = np.concatenate([[-np.inf], np.maximum.accumulate(ys)[:-1]])
    keep[order[ys > prev]] = True
    return keep


@dataclasses.dataclass
class ArchResult:
    """Frontier rows (TTFT- and memory-feasible, Pareto in tokens/s/user vs tokens/s/GPU) and counts."""

    rows: dict[str, np.ndarray]
    evaluated: int
    valid: int
    feasible_open: int  # TTFT and memory met
    feasible_strict: int  # ... and TPOT ≤ 15 ms
    reasons_strict: dict[str, int]  # why valid configurations miss the strict SLO (first failed check)
    seconds: float


def run_space(fn: Any, space: sw.DesignSpace, hw: js.Hardware, w: js.Workload, slo: js.SLO) -> ArchResult:
    """Every configuration of `space`, chunk by chunk, reduced to the TTFT/memory-feasible frontier."""
    t0 = time.perf_counter()
    chunk = min(CHUNK, space.size)
    open_slo = js.SLO(ttft_s=float(slo.ttft_s), tpot_s=OPEN_TPOT_S)
    kept: list[dict[str, np.ndarray]] = []
    n_valid = n_open = n_strict = 0
    reasons = np.zeros(len(REASONS), dtype=np.int64)
    for start in range(0, space.size, chunk):
        cols = fn(jnp.arange(start, start + chunk, dtype=jnp.int32), hw, w, open_slo)
        valid = np.asarray(cols["valid"])
        feas = np.asarray(cols["feasible"])
        tpot = np.asarray(cols["tpot_s"])
        reason = np.asarray(cols["reason"])
        strict = feas & (tpot <= TPOT_MS * 1e-3)
        n_valid += int(valid.sum())
        n_open += int(feas.sum())
        n_strict += int(strict.sum())
        r = np.where(feas & ~strict, REASONS.index("tpot"), reason)
        reasons += np.bincount(r[valid], minlength=len(REASONS))
        f = np.flatnonzero(feas)
        if f.size == 0:
            continue
        keep = f[pareto(np.asarray(cols["tok_per_s_per_user"])[f], np.asarray(cols["out_tok_per_s_per_gpu"])[f])]
        kept.append({k: np.asarray(v)[keep] for k, v in cols.items()})
        if len(kept) > 1:
            merged = {k: np.concatenate([p[k] for p in kept]) for k in kept[0]}
            mask = pareto(merged["tok_per_s_per_user"], merged["out_tok_per_s_per_gpu"])
            kept = [{k: v[mask] for k, v in merged.items()}]
    rows = kept[0] if kept else {}
    if rows:
        order = np.argsort(rows["tok_per_s_per_user"], kind="stable")
        rows = {k: v[order] for k, v in rows.items()}
    return ArchResult(rows, space.size, n_valid, n_open, n_strict,
                      {REASONS[i]: int(c) for i, c in enumerate(reasons) if i}, time.perf_counter() - t0)


def best_under(rows: dict[str, np.ndarray], tpot_ms: float) -> int | None:
    """Index of the frontier row of highest tokens/s/GPU whose TPOT meets `tpot_ms`, or None."""
    if not rows:
        return None
    ok = np.flatnonzero(rows["tpot_s"] <= tpot_ms * 1e-3 * (1 + 1e-6))
    if ok.size == 0:
        return None
    return int(ok[np.argmax(rows["out_tok_per_s_per_gpu"][ok])])


# --------------------------------------------------------------------------------------------------
# Describing a configuration
# --------------------------------------------------------------------------------------------------


def row_at(rows: dict[str, np.ndarray], i: int) -> dict[str, float]:
    return {k: float(v[i]) for k, v in rows.items()}


def split_of(arch: str, r: dict[str, float]) -> str:
    """nA:nF of one AFD instance (and the instances), '' for non-AFD architectures."""
    if "afd" not in arch:
        return ""
    n_a, n_f = r["attn_tp"] * r["attn_dp"], r["ffn_ep"] * r["ffn_moe_tp"]
    inst = r["attention_gpus"] / n_a
    return f"{n_a:g}A+{n_f:g}F" + (f" ×{inst:g}" if inst != 1 else "")


def dominant(r: dict[str, float]) -> tuple[str, float]:
    """The largest term of the TPOT-setting iteration's breakdown and its share of the summed parts."""
    parts = {t: r[f"breakdown_{t}_s"] for t in TERMS}
    total = sum(parts.values())
    k = max(parts, key=parts.get)
    return k, parts[k] / total if total > 0 else 0.0


def summarise(model: str, system: str, wl: str, arch: str, r: dict[str, float] | None, tpot_ms: float,
              res: ArchResult | None = None) -> dict[str, Any]:
    """One row of best.csv: the best configuration under the TPOT target (or why there is none)."""
    out: dict[str, Any] = {"model": model, "system": system, "workload": wl, "arch": arch, "tpot_target_ms": tpot_ms}
    if res is not None:
        out.update(configs=res.evaluated, valid=res.valid, feasible=res.feasible_strict,
                   why_not=";".join(f"{k}:{v}" for k, v in sorted(res.reasons_strict.items(), key=lambda x: -x[1])
                                    if v))
    if r is None:
        out.update(feasible_best=False)
        return out
    gpus = r["gpus"]
    term, share = dominant(r)
    pools = ("prefill", "attention", "ffn") if "afd" in arch else ("prefill", "decode")  # AFD: decode = attention
    mem = {p: r[f"{p}_memory_bytes"] / BYTES_GIB for p in pools}
    out.update(
        feasible_best=True,
        tok_s_gpu=r["out_tok_per_s_per_gpu"],
        tok_s_system=r["out_tok_per_s_per_gpu"] * gpus,
        gpus_used=gpus,
        tok_s_user=r["tok_per_s_per_user"],
        ttft_ms=r["ttft_s"] * 1e3,
        tpot_ms=r["tpot_s"] * 1e3,
        config=sw.describe_config(arch, r),
        split=split_of(arch, r),
        micro_batches=r.get("micro_batches", float("nan")) if "afd" in arch else float("nan"),
        batch_per_rank=r["decode_batch"],
        mem_gib_per_gpu=max(mem.values()),
        mem_gib_by_pool=";".join(f"{k}:{v:.1f}" for k, v in mem.items() if v > 0),
        gpus_by_pool=";".join(f"{k}:{r[f'{k}_gpus']:g}" for k in ("prefill", "decode", "attention", "ffn")
                              if r[f"{k}_gpus"] > 0),
        dominant_term=term,
        dominant_share=share,
        **{f"{t}_ms": r[f"breakdown_{t}_s"] * 1e3 for t in TERMS},
        hidden_ms=r["breakdown_hidden_s"] * 1e3,
    )
    return out


# --------------------------------------------------------------------------------------------------
# The studies
# --------------------------------------------------------------------------------------------------


def main_grid(models: tuple[str, ...], systems: tuple[str, ...], workloads: tuple[str, ...], quick: bool,
              log: Any) -> tuple[dict, dict, dict]:
    """Frontiers of every (model, system, workload, architecture); evaluators and spaces for reuse."""
    frontiers: dict[tuple[str, str, str, str], ArchResult] = {}
    evaluators: dict[tuple[str, str], Any] = {}
    spaces: dict[str, dict[str, sw.DesignSpace]] = {}
    compiled: dict[str, Any] = {}
    for model in models:
        m = load_model(model)
        spaces[model] = study_spaces(m, hardware(systems[0]), quick)
        for arch, space in spaces[model].items():
            key = json.dumps([m.name, space.signature()])
            if key not in compiled:
                t0 = time.perf_counter()
                fn = make_evaluator(space)
                hw, (w, slo) = hardware(systems[0]), preset_workload(workloads[0])
                compiled[key] = fn.lower(jnp.arange(min(CHUNK, space.size), dtype=jnp.int32), m, hw, w,
                                         js.SLO(ttft_s=float(slo.ttft_s), tpot_s=OPEN_TPOT_S)).compile()
                log(f"compiled {model} {arch} ({space.size:,} configurations) in {time.perf_counter() - t0:.1f} s")
            evaluators[model, arch] = functools.partial(_with_model, compiled[key], m)
        for system in systems:
            hw = hardware(system)
            for wl in workloads:
                w, slo = preset_workload(wl)
                for arch, space in spaces[model].items():
                    res = run_space(evaluators[model, arch], space, hw, w, slo)
                    frontiers[model, system, wl, arch] = res
                    i = best_under(res.rows, TPOT_MS)
                    best = f"{res.rows['out_tok_per_s_per_gpu'][i]:.0f} tok/s/GPU" if i is not None else "infeasible"
                    log(f"{model} {system} {wl} {arch}: {res.evaluated:,} configs in {res.seconds:.1f} s, "
                        f"{res.feasible_strict:,} strict-feasible, best {best}")
    return frontiers, evaluators, spaces


def context_study(models: tuple[str, ...], systems: tuple[str, ...], evaluators: dict, spaces: dict,
                  contexts: tuple[int, ...], log: Any) -> list[dict[str, Any]]:
    """Best Agg+AFD split nA:nF against the cached context (agentic input/output, TTFT ≤ 150 ms)."""
    rows = []
    _, slo = preset_workload("agentic-coding")
    for model in models:
        for system in systems:
            hw = hardware(system)
            for ctx in contexts:
                w = workload(ctx, 256, 8192)
                res = run_space(evaluators[model, "agg+afd"], spaces[model]["agg+afd"], hw, w, slo)
                for tpot_ms in (15.0, 50.0):
                    i = best_under(res.rows, tpot_ms)
                    out: dict[str, Any] = {"model": model, "system": system, "prefix_tokens": ctx,
                                           "input_tokens": 256, "output_tokens": 8192, "tpot_target_ms": tpot_ms}
                    if i is None:
                        out["feasible"] = False
                    else:
                        r = row_at(res.rows, i)
                        n_a, n_f = r["attn_tp"] * r["attn_dp"], r["ffn_ep"]
                        out.update(feasible=True, n_attn=n_a, n_ffn=n_f, attn_share=n_a / (n_a + n_f),
                                   attn_tp=r["attn_tp"], instances=r["attention_gpus"] / n_a,
                                   micro_batches=r["micro_batches"], batch_per_rank=r["decode_batch"],
                                   tok_s_gpu=r["out_tok_per_s_per_gpu"], tok_s_system=r["out_tok_per_s_per_gpu"]
                                   * r["gpus"], tpot_ms=r["tpot_s"] * 1e3,
                                   attn_mem_gib=r["attention_memory_bytes"] / BYTES_GIB,
                                   ffn_mem_gib=r["ffn_memory_bytes"] / BYTES_GIB,
                                   dominant_term=dominant(r)[0])
                    rows.append(out)
                log(f"context {model} {system} {ctx}: {res.seconds:.1f} s")
    return rows


def whatif_study(evaluators: dict, spaces: dict, log: Any) -> list[dict[str, Any]]:
    """DeepSeek-V3.2 on B200: what the strict-SLO winners become when one model term is made costlier.

    Not a fit: each row changes one hardware number to a value named in the row, to show which term decides
    whether non-AFD deployments are feasible. Latencies: DeepEP's published low-latency kernels take tens to
    hundreds of µs per dispatch or combine (DESIGN.md §5), against the 3 / 10 µs per collective in the spec.
    """
    model = "deepseek-v3.2"
    if (model, "agg") not in evaluators:
        return []
    base = hardware("b200")
    cases = [("spec (as shipped)", base)]
    for lat_us in (25.0, 50.0, 100.0):
        cases.append((f"collective latency {lat_us:g} µs (NVLink and NIC)",
                      eqx.tree_at(lambda h: (h.scale_up_latency_s, h.scale_out_latency_s), base,
                                  (_f32(lat_us * 1e-6), _f32(lat_us * 1e-6)))))
    cases.append(("per-layer overhead 60 µs (×3)",
                  eqx.tree_at(lambda h: h.eff.layer_overhead_s, base, 3.0 * base.eff.layer_overhead_s)))
    cases.append(("HBM efficiency ×0.5", eqx.tree_at(
        lambda h: (h.eff.gemm_memory_frac, h.eff.attn_memory_frac, h.eff.moe_memory_frac), base,
        (0.5 * base.eff.gemm_memory_frac, 0.5 * base.eff.attn_memory_frac, 0.5 * base.eff.moe_memory_frac))))
    out = []
    for wl in ("chat", "coding"):
        w, slo = preset_workload(wl)
        for label, hw in cases:
            for arch in ("agg", "disagg", "agg+afd"):  # P/D+AFD left out: its space alone would double the time
                res = run_space(evaluators[model, arch], spaces[model][arch], hw, w, slo)
                i = best_under(res.rows, TPOT_MS)
                r = row_at(res.rows, i) if i is not None else None
                min_tpot = float(res.rows["tpot_s"].min()) * 1e3 if res.rows else float("nan")
                row = {"case": label, "model": model, "system": "b200", "workload": wl, "arch": arch,
                       "min_tpot_ms": min_tpot, "feasible": r is not None}
                if r is not None:
                    row.update(tok_s_gpu=r["out_tok_per_s_per_gpu"], tok_s_system=r["out_tok_per_s_per_gpu"]
                               * r["gpus"], config=sw.describe_config(arch, r), tpot_ms=r["tpot_s"] * 1e3,
                               dispatch_combine_ms=(r["breakdown_dispatch_s"] + r["breakdown_combine_s"]) * 1e3)
                out.append(row)
        log(f"what-if {wl} done")
    return out


def optimizer_study(models: tuple[str, ...], systems: tuple[str, ...], workloads: tuple[str, ...],
                    frontiers: dict, log: Any, budget_s: float = float("inf"),
                    csv_path: Path | None = None) -> list[dict[str, Any]]:
    """`jaxsim.optimize.optimize` (default settings and bases) next to the grid's best, per scenario.

    No new optimiser call starts once `budget_s` seconds have passed (the rest are recorded as skipped);
    rows are written to `csv_path` as they come, so an interrupted run keeps what it has.
    """
    rows: list[dict[str, Any]] = []
    t_begin = time.perf_counter()
    for model in models:
        m = load_model(model)
        for system in systems:
            hw = hardware(system)
            for wl in workloads:
                w, slo = preset_workload(wl)
                for arch in op.OPT_ARCHITECTURES:
                    if time.perf_counter() - t_begin > budget_s:
                        rows.append({"model": model, "system": system, "workload": wl, "arch": arch,
                                     "skipped": f"optimiser time budget of {budget_s:.0f} s spent"})
                        continue
                    t0 = time.perf_counter()
                    bases = op.default_bases(m, hw, arch, TOTAL_GPUS)
                    res = op.optimize(m, hw, arch, bases, TOTAL_GPUS, w, slo)
                    dt = time.perf_counter() - t0
                    grid = frontiers[model, system, wl, arch]
                    i = best_under(grid.rows, TPOT_MS)
                    g = grid.rows["out_tok_per_s_per_gpu"][i] if i is not None else None
                    row: dict[str, Any] = {"model": model, "system": system, "workload": wl, "arch": arch,
                                           "grid_tok_s_gpu": g, "grid_config": sw.describe_config(
                                               arch, row_at(grid.rows, i)) if i is not None else "",
                                           "optimizer_seconds": dt, "bases": len(bases),
                                           "relaxed_tok_s_gpu": res.relaxed_tok_per_s_per_gpu,
                                           "converged_starts": f"{res.converged_starts}/{res.total_starts}"}
                    if res.legal_config is not None:
                        lm = res.legal_metrics
                        c = op.config_dict(arch, res.legal_config)
                        row.update(opt_tok_s_gpu=float(lm.out_tok_per_s_per_gpu), opt_tpot_ms=float(lm.tpot_s) * 1e3,
                                   opt_ttft_ms=float(lm.ttft_s) * 1e3, opt_gpus=float(lm.gpus),
                                   opt_config=_describe_opt(arch, c))
                        if g:
                            row["ratio"] = float(lm.out_tok_per_s_per_gpu) / g
                    rows.append(row)
                    if csv_path is not None:
                        write_csv(csv_path, rows)
                    log(f"optimizer {model} {system} {wl} {arch}: {dt:.1f} s, "
                        f"{row.get('opt_tok_s_gpu', 'none')} vs grid {g}")
    if csv_path is not None:
        write_csv(csv_path, rows)
    return rows


def _describe_opt(arch: str, c: dict[str, float]) -> str:
    if arch == "agg":
        return f"{sw.describe_config('agg', c)} ×{c['workers']:g}"
    if arch == "disagg":
        return sw.describe_config("disagg", c)
    n_a, n_f = c["attn_tp"] * c["attn_dp"], c["ffn_ep"] * c["ffn_moe_tp"]
    return (f"{n_a:g}A (TP{c['attn_tp']:g}) + {n_f:g}F, M={c['micro_batches']:g}, batch {c['batch']:g}, "
            f"chunk {c['chunk']:g} ×{c['workers']:g}")


def check_against_library_sweep(model: str, system: str, wl: str, spaces: dict, frontiers: dict) -> dict[str, Any]:
    """The same scenario through `jaxsim.sweep.sweep` (real SLO, keep='pareto'): same best per architecture?"""
    m = load_model(model)
    hw = hardware(system)
    w, slo = preset_workload(wl)
    strict = js.SLO(ttft_s=float(slo.ttft_s), tpot_s=TPOT_MS * 1e-3)
    t0 = time.perf_counter()
    res = sw.sweep(list(spaces[model].values()), m, hw, w, strict, keep="pareto", top_k=4)
    out: dict[str, Any] = {"scenario": f"{model} {system} {wl}", "seconds": time.perf_counter() - t0}
    for arch in ARCHS:
        b = res.best(arch)
        lib = float(b["out_tok_per_s_per_gpu"][0]) if len(b["arch"]) else None
        i = best_under(frontiers[model, system, wl, arch].rows, TPOT_MS)
        ours = float(frontiers[model, system, wl, arch].rows["out_tok_per_s_per_gpu"][i]) if i is not None else None
        same = (lib is None and ours is None) or (lib is not None and ours is not None
                                                   and abs(lib - ours) <= 1e-5 * max(lib, ours))
        out[arch] = {"library_sweep": lib, "this_script": ours, "same": bool(same)}
    return out


# --------------------------------------------------------------------------------------------------
# Output: CSV, markdown tables, plots
# --------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def fmt(x: Any, spec: str = ".0f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def best_table(best: list[dict[str, Any]], system: str) -> str:
    """Markdown: per (model, workload) and architecture, the best strict-SLO configuration."""
    lines = [f"#### {system} × {TOTAL_GPUS}, TPOT ≤ {TPOT_MS:g} ms, TTFT ≤ the workload's target",
             "", "| model | workload | arch | tok/s/GPU | system tok/s (GPUs used) | tok/s/user | TTFT ms | TPOT ms "
             "| configuration | nA:nF | mem GiB/GPU (by pool) | dominant TPOT term |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    for r in best:
        if r["system"] != system:
            continue
        if not r.get("feasible_best"):
            why = r.get("why_not", "")
            lines.append(f"| {r['model']} | {r['workload']} | {LABEL[r['arch']]} | infeasible | – | – | – | – | "
                         f"first failed check over {r.get('valid', 0):,} valid configs: {why} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['workload']} | {LABEL[r['arch']]} | {fmt(r['tok_s_gpu'])} | "
            f"{fmt(r['tok_s_system'])} ({r['gpus_used']:g}) | {fmt(r['tok_s_user'], '.1f')} | "
            f"{fmt(r['ttft_ms'], '.1f')} | {fmt(r['tpot_ms'], '.2f')} | {r['config']} | {r['split']} | "
            f"{r['mem_gib_per_gpu']:.0f} ({r['mem_gib_by_pool']}) | "
            f"{r['dominant_term']} {100 * r['dominant_share']:.0f} % |")
    return "\n".join(lines)


def slo_table(slo_rows: list[dict[str, Any]], system: str) -> str:
    """Markdown: best tokens/s/GPU per TPOT target (– = infeasible), one row per (model, workload, arch)."""
    head = "| model | workload | arch | min TPOT ms | " + " | ".join(f"{t:g}" for t in TPOT_SWEEP_MS) + " |"
    lines = [f"#### {system}: best output tokens/s/GPU per TPOT target (ms); – = no feasible configuration", "",
             head, "|---|---|---|---:|" + "---:|" * len(TPOT_SWEEP_MS)]
    keyed: dict[tuple, dict[float, Any]] = {}
    mins: dict[tuple, float] = {}
    for r in slo_rows:
        if r["system"] != system:
            continue
        k = (r["model"], r["workload"], r["arch"])
        keyed.setdefault(k, {})[r["tpot_target_ms"]] = r.get("tok_s_gpu")
        mins[k] = r["min_tpot_ms"]
    for k, vals in keyed.items():
        lines.append(f"| {k[0]} | {k[1]} | {LABEL[k[2]]} | {fmt(mins[k], '.1f')} | "
                     + " | ".join(fmt(vals.get(float(t))) for t in TPOT_SWEEP_MS) + " |")
    return "\n".join(lines)


def plot_pareto(frontiers: dict, model: str, systems: tuple[str, ...], workloads: tuple[str, ...],
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsim.plots import COLORS

    fig, axes = plt.subplots(len(systems), len(workloads), figsize=(4.2 * len(workloads), 3.3 * len(systems)),
                             dpi=90, squeeze=False)
    for i, system in enumerate(systems):
        for j, wl in enumerate(workloads):
            ax = axes[i, j]
            for arch in ARCHS:
                rows = frontiers[model, system, wl, arch].rows
                if not rows:
                    continue
                ax.plot(rows["tok_per_s_per_user"], rows["out_tok_per_s_per_gpu"], marker="o", ms=2, lw=1.2,
                        color=COLORS[arch], label=LABEL[arch])
            ax.axvline(1e3 / TPOT_MS, color="0.3", ls="--", lw=0.8)
            ax.set_title(f"{system}, {wl}", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
            if i == len(systems) - 1:
                ax.set_xlabel("tokens/s/user (1/TPOT)", fontsize=8)
            if j == 0:
                ax.set_ylabel("output tokens/s/GPU", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{model}: Pareto frontiers on {TOTAL_GPUS} GPUs (TTFT target met; dashed: TPOT {TPOT_MS:g} ms)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_slo(slo_rows: list[dict[str, Any]], model: str, systems: tuple[str, ...], workloads: tuple[str, ...],
             path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsim.plots import COLORS

    fig, axes = plt.subplots(len(systems), len(workloads), figsize=(4.2 * len(workloads), 3.1 * len(systems)),
                             dpi=90, squeeze=False)
    for i, system in enumerate(systems):
        for j, wl in enumerate(workloads):
            ax = axes[i, j]
            for arch in ARCHS:
                pts = [(r["tpot_target_ms"], r.get("tok_s_gpu")) for r in slo_rows
                       if (r["model"], r["system"], r["workload"], r["arch"]) == (model, system, wl, arch)]
                x = [p[0] for p in pts if p[1] is not None]
                y = [p[1] for p in pts if p[1] is not None]
                if x:
                    ax.plot(x, y, marker="o", ms=3, lw=1.2, color=COLORS[arch], label=LABEL[arch])
            ax.axvline(TPOT_MS, color="0.3", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{system}, {wl}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
            if i == len(systems) - 1:
                ax.set_xlabel("TPOT target (ms)", fontsize=8)
            if j == 0:
                ax.set_ylabel("best output tokens/s/GPU", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{model}: SLO tightness (a curve starts at the tightest feasible TPOT)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_splits(split_rows: list[dict[str, Any]], models: tuple[str, ...], systems: tuple[str, ...],
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.4), dpi=90, squeeze=False)
    styles = {"b200": "tab:blue", "gb200-nvl72": "tab:green", "h200-sxm": "tab:orange"}
    for j, model in enumerate(models):
        ax = axes[0, j]
        for system in systems:
            for tpot_ms, ls in ((15.0, "-"), (50.0, ":")):
                pts = [r for r in split_rows if r["model"] == model and r["system"] == system
                       and r["tpot_target_ms"] == tpot_ms and r.get("feasible")]
                if not pts:
                    continue
                ax.plot([p["prefix_tokens"] for p in pts], [p["attn_share"] for p in pts], ls=ls, marker="o", ms=3,
                        color=styles.get(system, "k"), label=f"{system}, TPOT ≤ {tpot_ms:g} ms")
                for p in pts[-1:]:
                    ax.annotate(f"{p['n_attn']:g}A+{p['n_ffn']:g}F", (p["prefix_tokens"], p["attn_share"]),
                                fontsize=6, xytext=(-30, 4), textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("cached context (tokens); input 256, output 8192", fontsize=8)
        ax.set_ylabel("attention share nA / (nA + nF) of the best Agg+AFD", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except Exception:  # no git: record nothing
            return ""

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "commit": git("rev-parse", "HEAD"),
            "calibration_commit": git("log", "-1", "--format=%h %s", "--", "specs/calibration"),
            "uncommitted_library_changes": git("status", "--short", "--", "jaxsim", "specs").splitlines(),
            "uncommitted_diff_sha1": _sha1(git("diff", "--", "jaxsim", "specs")),
            "load_average_at_start": load}


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="DeepSeek-V3.2 on B200, chat, thin spaces (smoke test)")
    p.add_argument("--no-optimizer", action="store_true", help="skip the optimiser comparison")
    p.add_argument("--no-library-check", action="store_true", help="skip the check against jaxsim.sweep.sweep")
    p.add_argument("--optimizer-systems", default=",".join(SYSTEMS),
                   help="comma list of systems on which to run the optimiser (default: all; compilations are shared "
                        "across systems, so each extra system costs about a minute)")
    p.add_argument("--optimizer-budget-s", type=float, default=900.0,
                   help="no new optimiser call starts after this many seconds of optimiser time (default 900)")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default: results/ beside this file)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    env = environment()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    if args.quick:
        models, systems, workloads, contexts = ("deepseek-v3.2",), ("b200",), ("chat",), (4096, 524288)
    else:
        models, systems, workloads, contexts = MODELS, SYSTEMS, WORKLOADS, CONTEXTS
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    frontiers, evaluators, spaces = main_grid(models, systems, workloads, args.quick, log)
    timings["grid_s"] = time.perf_counter() - t0

    # ---- headline, SLO tightness, frontiers ----
    best_rows, slo_rows, front_rows = [], [], []
    for (model, system, wl, arch), res in frontiers.items():
        i = best_under(res.rows, TPOT_MS)
        best_rows.append(summarise(model, system, wl, arch, row_at(res.rows, i) if i is not None else None, TPOT_MS,
                                   res))
        min_tpot = float(res.rows["tpot_s"].min()) * 1e3 if res.rows else float("nan")
        for t in TPOT_SWEEP_MS:
            k = best_under(res.rows, float(t))
            r = row_at(res.rows, k) if k is not None else None
            slo_rows.append({"model": model, "system": system, "workload": wl, "arch": arch,
                             "tpot_target_ms": float(t), "min_tpot_ms": min_tpot,
                             "tok_s_gpu": r["out_tok_per_s_per_gpu"] if r else None,
                             "tok_s_system": r["out_tok_per_s_per_gpu"] * r["gpus"] if r else None,
                             "config": sw.describe_config(arch, r) if r else ""})
        for k in range(len(res.rows.get("tpot_s", []))):
            r = row_at(res.rows, k)
            front_rows.append({"model": model, "system": system, "workload": wl, "arch": arch,
                               "tok_s_user": r["tok_per_s_per_user"], "tok_s_gpu": r["out_tok_per_s_per_gpu"],
                               "ttft_ms": r["ttft_s"] * 1e3, "tpot_ms": r["tpot_s"] * 1e3, "gpus": r["gpus"],
                               "memory_frac": r["memory_frac"], "config": sw.describe_config(arch, r)})
    write_csv(out / "best.csv", best_rows)
    write_csv(out / "slo_tightness.csv", slo_rows)
    write_csv(out / "frontiers.csv", front_rows)

    t0 = time.perf_counter()
    split_rows = context_study(models, systems, evaluators, spaces, contexts, log)
    timings["context_study_s"] = time.perf_counter() - t0
    write_csv(out / "splits.csv", split_rows)

    t0 = time.perf_counter()
    whatif_rows = whatif_study(evaluators, spaces, log) if not args.quick else []
    timings["whatif_s"] = time.perf_counter() - t0
    write_csv(out / "whatif.csv", whatif_rows)

    check: dict[str, Any] = {}
    if not args.no_library_check:
        t0 = time.perf_counter()
        check = check_against_library_sweep(models[0], systems[0], workloads[0], spaces, frontiers)
        timings["library_check_s"] = time.perf_counter() - t0
        log(f"library sweep check: {check}")

    def write_reports(opt_rows: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        for model in models:
            plot_pareto(frontiers, model, systems, workloads, out / f"pareto_{model}.png")
            plot_slo(slo_rows, model, systems, workloads, out / f"slo_{model}.png")
        plot_splits(split_rows, models, systems, out / "split_vs_context.png")
        timings["plots_s"] = time.perf_counter() - t0
        tables = ["# Generated tables (run.py)", ""]
        for system in systems:
            tables += [best_table(best_rows, system), ""]
        for system in systems:
            tables += [slo_table(slo_rows, system), ""]
        tables += [split_table(split_rows), "", whatif_table(whatif_rows), "", optimizer_table(opt_rows), ""]
        (out / "tables.md").write_text("\n".join(tables))
        timings["total_s"] = time.perf_counter() - t_start
        summary = {"environment": env, "quick": args.quick, "timings_s": timings,
                   "space_sizes": {m: {a: s.size for a, s in sp.items()} for m, sp in spaces.items()},
                   "library_sweep_check": check, "claims": claims(best_rows, slo_rows, split_rows, frontiers)}
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    write_reports([])  # everything but the optimiser, in case the optimiser is interrupted
    opt_rows: list[dict[str, Any]] = []
    if not args.no_optimizer:
        t0 = time.perf_counter()
        opt_systems = tuple(x for x in args.optimizer_systems.split(",") if x in systems)
        opt_rows = optimizer_study(models, opt_systems, workloads, frontiers, log, args.optimizer_budget_s,
                                   out / "optimizer.csv")
        timings["optimizer_s"] = time.perf_counter() - t0
        write_reports(opt_rows)
    log(f"done in {timings['total_s']:.0f} s; results in {out}")
    return 0


def split_table(rows: list[dict[str, Any]]) -> str:
    lines = ["#### Best Agg+AFD split against the cached context (input 256, output 8192, TTFT ≤ 150 ms)", "",
             "| model | system | TPOT target ms | " + " | ".join(f"{c // 1024}k" for c in CONTEXTS) + " |",
             "|---|---|---:|" + "---|" * len(CONTEXTS)]
    keyed: dict[tuple, dict[int, str]] = {}
    for r in rows:
        k = (r["model"], r["system"], r["tpot_target_ms"])
        cell = (f"{r['n_attn']:g}A+{r['n_ffn']:g}F ×{r['instances']:g} M{r['micro_batches']:g} b{r['batch_per_rank']:g}"
                f" {r['tok_s_gpu']:.0f}" if r.get("feasible") else "infeasible")
        keyed.setdefault(k, {})[r["prefix_tokens"]] = cell
    for k, v in keyed.items():
        lines.append(f"| {k[0]} | {k[1]} | {k[2]:g} | " + " | ".join(v.get(c, "") for c in CONTEXTS) + " |")
    lines.append("")
    lines.append("Cell: attention GPUs + FFN GPUs of one instance × instances, micro-batches, decode batch per "
                 "attention rank, output tokens/s/GPU.")
    return "\n".join(lines)


def whatif_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["#### What-if: DeepSeek-V3.2 on 128 × B200, one model term made costlier (strict SLO)", "",
             "| case | workload | " + " | ".join(LABEL[a] for a in ARCHS[:3]) + " |", "|---|---|" + "---|" * 3]
    keyed: dict[tuple, dict[str, str]] = {}
    for r in rows:
        cell = (f"{r['tok_s_gpu']:.0f} (TPOT {r['tpot_ms']:.1f}, A2A {r['dispatch_combine_ms']:.1f} ms)"
                if r["feasible"] else f"infeasible (min TPOT {r['min_tpot_ms']:.1f} ms)")
        keyed.setdefault((r["case"], r["workload"]), {})[r["arch"]] = cell
    for k, v in keyed.items():
        lines.append(f"| {k[0]} | {k[1]} | " + " | ".join(v.get(a, "") for a in ARCHS[:3]) + " |")
    lines.append("")
    lines.append("Cell: best output tokens/s/GPU under TTFT ≤ target and TPOT ≤ 15 ms, its TPOT and the "
                 "dispatch + combine (AFD: A2F + F2A) time per iteration; or the tightest TPOT any configuration "
                 "reaches under the TTFT and memory limits.")
    return "\n".join(lines)


def optimizer_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["#### Optimiser (`jaxsim.optimize.optimize`, default settings and bases) next to the grid", "",
             "| model | system | workload | arch | grid tok/s/GPU | optimiser tok/s/GPU | ratio | optimiser s | "
             "grid configuration | optimiser configuration |", "|---|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['system']} | {r['workload']} | {LABEL[r['arch']]} | "
                     f"{fmt(r.get('grid_tok_s_gpu'))} | {fmt(r.get('opt_tok_s_gpu'))} | {fmt(r.get('ratio'), '.3f')} | "
                     f"{fmt(r.get('optimizer_seconds'), '.1f')} | {r.get('grid_config', '')} | "
                     f"{r.get('skipped') or r.get('opt_config', 'none')} |")
    return "\n".join(lines)


def claims(best: list[dict[str, Any]], slo_rows: list[dict[str, Any]], split_rows: list[dict[str, Any]],
           frontiers: dict) -> dict[str, Any]:
    """The paper's claims, each with the numbers this run gives for it (interpreted in README.md)."""
    out: dict[str, Any] = {}
    ds = [r for r in best if r["model"] == "deepseek-v3.2"]
    out["deepseek_non_afd_feasible"] = {f"{r['system']} {r['workload']} {r['arch']}": r.get("feasible_best", False)
                                        for r in ds if "afd" not in r["arch"]}
    out["deepseek_afd_system_tok_s"] = {f"{r['system']} {r['workload']} {r['arch']}": r.get("tok_s_system")
                                        for r in ds if "afd" in r["arch"]}
    peak, user = {}, {}
    for (model, system, wl, arch), res in frontiers.items():
        if not res.rows:
            continue
        key = f"{model} {system} {wl}"
        i = best_under(res.rows, max(TPOT_SWEEP_MS))
        if i is not None:
            peak.setdefault(key, {})[arch] = float(res.rows["out_tok_per_s_per_gpu"][i])
        user.setdefault(key, {})[arch] = float(res.rows["tok_per_s_per_user"].max())
    out["peak_tok_s_gpu_at_tpot_100ms"] = peak
    out["peak_winner"] = {k: max(v, key=v.get) for k, v in peak.items()}
    out["max_tok_s_user"] = user
    out["user_winner"] = {k: max(v, key=v.get) for k, v in user.items()}
    out["splits_at_longest_context"] = {
        f"{r['model']} {r['system']} TPOT {r['tpot_target_ms']:g}": f"{r['n_attn']:g}A+{r['n_ffn']:g}F"
        for r in split_rows if r["prefix_tokens"] == max(CONTEXTS) and r.get("feasible")}
    return out


if __name__ == "__main__":
    sys.exit(main())
