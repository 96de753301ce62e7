"""The differentiable optimiser against the exhaustive grid of the same legal space, then a high-dimensional case.

    python experiments/optimizer_vs_grid/run.py            # everything (about 12 minutes on 2 CPU cores)
    python experiments/optimizer_vs_grid/run.py --quick    # two groups and a smaller high-dim search (smoke)

For every scenario (model × hardware × GPUs × architecture × workload × SLO):
- the grid: every legal allocation the optimiser's rounding/repair (`jaxsim.optimize.rounded_allocations`) can
  produce over the same discrete bases (`jaxsim.optimize.default_bases`), priced with the hard model by
  `jaxsim.estimate_batch`; its best SLO-feasible output tokens/s/GPU;
- the optimiser: `jaxsim.optimize.optimize` with its default `Settings`; its legal result re-evaluated with the
  hard model (feasible, TTFT ≤ target, TPOT ≤ target, memory ≤ capacity) and checked to lie in the grid;
- the ratio optimiser / grid, the model evaluations and the wall time of each (compilation timed separately).

Writes results.json, results.csv and results.md (the scenario table) beside this file; the high-dimensional case
(`highdim.py`) adds its own section to results.json.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
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

HERE = Path(__file__).resolve().parent
BLOCK = 65536  # grid rows per estimate_batch call: one compilation per (model, hardware, architecture)
AFD_MAX_MICRO = op.MAX_MICRO_BATCHES  # the legal bound on AFD micro-batches, shared with the optimiser
SETTINGS = op.Settings()  # the optimiser's defaults: 6 starts, 10 rounds × 60 Adam steps

# Workloads as (prefix, input, output) tokens. All are built with one static name so that scenarios of one
# (model, hardware, GPUs, architecture) group share compilations; the name enters no formula.
WORKLOADS = {
    "chat": js.load_workload("chat"),  # 4k / 512 / 256
    "coding": js.load_workload("coding"),  # 2k / 4k / 1k
    "summarize": js.Workload(name="summarize", prefix_tokens=0.0, input_tokens=8192.0, output_tokens=512.0),
}
# Strict = the presets' SLOs (chat 50 ms / 15 ms, coding 100 ms / 15 ms); the custom workload's strict SLO is
# stated here. Loose = 4 × the TTFT target and 3 × the TPOT target.
STRICT = {"chat": js.load_slo("chat"), "coding": js.load_slo("coding"), "summarize": js.SLO(ttft_s=0.5, tpot_s=0.02)}


def slo_of(workload: str, kind: str) -> js.SLO:
    s = STRICT[workload]
    if kind == "strict":
        return s
    return js.SLO(ttft_s=4.0 * float(s.ttft_s), tpot_s=3.0 * float(s.tpot_s))


def workload_of(name: str) -> js.Workload:
    w = WORKLOADS[name]
    return js.Workload(name="scenario", prefix_tokens=float(w.prefix_tokens), input_tokens=float(w.input_tokens),
                       output_tokens=float(w.output_tokens))


ALL_SLOS = [(w, k) for w in ("chat", "coding", "summarize") for k in ("strict", "loose")]
TWO_WORKLOADS = [(w, k) for w in ("chat", "coding") for k in ("strict", "loose")]
# (architecture, model, hardware, GPUs, [(workload, SLO kind)]): every scenario of a group shares the bases.
GROUPS = [
    ("agg", "deepseek-v3", "h200-sxm", 16, ALL_SLOS),
    ("agg", "deepseek-v3", "b200", 8, ALL_SLOS),
    ("agg", "deepseek-v3", "h100-sxm", 32, ALL_SLOS),
    ("agg", "qwen3-235b-a22b", "h200-sxm", 8, ALL_SLOS),
    ("agg", "qwen3-235b-a22b", "b200", 64, ALL_SLOS),
    ("agg", "gpt-oss-120b", "h100-sxm", 16, ALL_SLOS),
    ("agg", "gpt-oss-120b", "h200-sxm", 64, ALL_SLOS),
    ("disagg", "qwen3-235b-a22b", "h200-sxm", 16, TWO_WORKLOADS),
    ("disagg", "gpt-oss-120b", "b200", 16, TWO_WORKLOADS),
    ("agg+afd", "deepseek-v3", "b200", 16, TWO_WORKLOADS),
    ("agg+afd", "qwen3-235b-a22b", "h200-sxm", 16, TWO_WORKLOADS),
]
QUICK_GROUPS = [GROUPS[3], GROUPS[9]]


# --------------------------------------------------------------------------------------------------
# The legal space as columns (one row per configuration), and how a block of rows becomes configs
# --------------------------------------------------------------------------------------------------


def grid_columns(arch: str, bases: list[Any], total_gpus: int, m: js.Model) -> dict[str, np.ndarray]:
    """Every legal allocation of every base (the space the optimiser's rounding and repair choose from), as columns."""
    batches = np.arange(1.0, op.MAX_BATCH + 1.0)
    chunks = np.asarray(op.LEGAL_CHUNKS)
    parts: list[dict[str, np.ndarray]] = []
    if arch == "agg":
        b, c = (x.ravel() for x in np.meshgrid(batches, chunks, indexing="ij"))
        for i in range(len(bases)):
            parts.append({"base": np.full(b.size, i), "batch": b, "chunk": c})
    elif arch == "disagg":
        pb, db = (x.ravel() for x in np.meshgrid(np.arange(1.0, op.MAX_PREFILL_BATCH + 1.0), batches, indexing="ij"))
        for i, base in enumerate(bases):
            gp, gd = float(base.prefill.gpus), float(base.decode.gpus)
            # Every pair of worker counts that fits the cluster (tokens/s/GPU counts the GPUs used, so a pair
            # that leaves GPUs idle can win).
            for wp in range(1, int(total_gpus // gp) + 1):
                for wd in range(1, int((total_gpus - wp * gp) // gd) + 1):
                    parts.append({"base": np.full(pb.size, i), "prefill_workers": np.full(pb.size, float(wp)),
                                  "decode_workers": np.full(pb.size, float(wd)), "prefill_batch": pb,
                                  "decode_batch": db})
    else:  # agg+afd
        micro, b, c = (x.ravel() for x in np.meshgrid(np.arange(1.0, AFD_MAX_MICRO + 1.0), batches, chunks,
                                                      indexing="ij"))
        for i, base in enumerate(bases):
            tp, moe_tp = float(base.deploy.tp), float(base.deploy.moe_tp)
            for n_attn in op.afd_splits(base, total_gpus, m):
                parts.append({"base": np.full(b.size, i), "dp": np.full(b.size, n_attn / tp),
                              "ep": np.full(b.size, (total_gpus - n_attn) / moe_tp), "micro_batches": micro,
                              "batch": b, "chunk": c})
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def materialise(arch: str, stacked: Any, rows: dict[str, np.ndarray]) -> Any:
    """Configurations of a block of rows: each row's base with the row's allocation written in."""
    cfg = jax.tree.map(lambda x: x[rows["base"]], stacked)
    f = lambda k: jnp.asarray(rows[k], jnp.float32)  # noqa: E731
    if arch == "agg":
        cfg = eqx.tree_at(lambda c: (c.batch, c.chunk), cfg, (f("batch"), f("chunk")))
    elif arch == "disagg":
        cfg = eqx.tree_at(lambda c: (c.prefill_workers, c.decode_workers, c.prefill_batch, c.decode_batch), cfg,
                          (f("prefill_workers"), f("decode_workers"), f("prefill_batch"), f("decode_batch")))
    else:
        cfg = eqx.tree_at(lambda c: (c.deploy.dp, c.deploy.ep, c.micro_batches, c.batch, c.chunk), cfg,
                          (f("dp"), f("ep"), f("micro_batches"), f("batch"), f("chunk")))
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), cfg)


def block_rows(cols: dict[str, np.ndarray], start: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows start … start + BLOCK (the last block padded by repeating its last row) and the mask of real ones."""
    n = len(cols["base"])
    idx = np.arange(start, start + BLOCK)
    return {k: v[np.minimum(idx, n - 1)] for k, v in cols.items()}, idx < n


def evaluate_grid(m: js.Model, hw: js.Hardware, arch: str, stacked: Any, cols: dict[str, np.ndarray],
                  w: js.Workload, slo: js.SLO) -> dict[str, Any]:
    """Best SLO-feasible tokens/s/GPU over every row (hard model), the row, and how many rows are feasible."""
    n = len(cols["base"]) if cols else 0
    best, best_row, feasible = -np.inf, None, 0
    for start in range(0, n, BLOCK):
        rows, real = block_rows(cols, start)
        r = js.estimate_batch(m, hw, materialise(arch, stacked, rows), w, slo)
        ok = np.asarray(r.feasible) & real
        feasible += int(ok.sum())
        tput = np.where(ok, np.asarray(r.out_tok_per_s_per_gpu, np.float64), -np.inf)
        k = int(np.argmax(tput))
        if tput[k] > best:
            best, best_row = float(tput[k]), {c: float(v[k]) for c, v in rows.items()}
    return {"best": best if np.isfinite(best) else None, "row": best_row, "size": n, "feasible": feasible}


def row_of(arch: str, bases: list[Any], cfg: Any) -> dict[str, float] | None:
    """The grid row of a configuration the optimiser returned, or None when it is outside the grid."""
    d = op.config_dict(arch, cfg)
    same = lambda a, b: all(abs(float(np.asarray(x)) - float(np.asarray(y))) < 1e-6  # noqa: E731
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    if arch == "agg":
        base = next((i for i, b in enumerate(bases) if same(b.deploy, cfg.deploy)), None)
        ok = d["batch"] in range(1, int(op.MAX_BATCH) + 1) and d["chunk"] in op.LEGAL_CHUNKS
        return {"base": base, "batch": d["batch"], "chunk": d["chunk"]} if ok and base is not None else None
    if arch == "disagg":
        base = next((i for i, b in enumerate(bases) if same(b.prefill, cfg.prefill) and same(b.decode, cfg.decode)),
                    None)
        ok = (float(d["prefill_batch"]).is_integer() and 1 <= d["prefill_batch"] <= op.MAX_PREFILL_BATCH
              and float(d["decode_batch"]).is_integer() and 1 <= d["decode_batch"] <= op.MAX_BATCH)
        return ({k: d[k] for k in ("prefill_workers", "decode_workers", "prefill_batch", "decode_batch")}
                | {"base": base}) if ok and base is not None else None
    keep = ("tp", "moe_tp", "pp", "nextn", "nextn_accept", "gemm_weight_bytes", "moe_weight_bytes", "kv_bytes")
    base = next((i for i, b in enumerate(bases)
                 if all(float(getattr(b.deploy, k)) == float(getattr(cfg.deploy, k)) for k in keep)), None)
    ok = (1 <= d["micro_batches"] <= AFD_MAX_MICRO and float(d["micro_batches"]).is_integer()
          and float(d["batch"]).is_integer() and 1 <= d["batch"] <= op.MAX_BATCH and d["chunk"] in op.LEGAL_CHUNKS)
    return ({"base": base, "dp": d["attn_dp"], "ep": d["ffn_ep"], "micro_batches": d["micro_batches"],
             "batch": d["batch"], "chunk": d["chunk"]} if ok and base is not None else None)


def describe(arch: str, bases: list[Any], row: dict[str, float] | None) -> str:
    """A short label of a grid row: parallelism and allocation."""
    if row is None:
        return "-"
    b = bases[int(row["base"])]
    if arch == "agg":
        d = b.deploy
        return (f"TP{int(d.tp)} DP{int(d.dp)} EP{int(d.ep)} ×{int(b.workers)}, b={int(row['batch'])}, "
                f"c={int(row['chunk'])}")
    if arch == "disagg":
        p, d = b.prefill, b.decode
        return (f"P TP{int(p.tp)}DP{int(p.dp)}×{int(row['prefill_workers'])} b={int(row['prefill_batch'])}; "
                f"D TP{int(d.tp)}DP{int(d.dp)}×{int(row['decode_workers'])} b={int(row['decode_batch'])}")
    d = b.deploy
    return (f"{int(float(d.tp) * row['dp'])}A(TP{int(d.tp)})+{int(row['ep'])}F, M={int(row['micro_batches'])}, "
            f"b={int(row['batch'])}, c={int(row['chunk'])}")


# --------------------------------------------------------------------------------------------------
# One group of scenarios
# --------------------------------------------------------------------------------------------------


def run_group(arch: str, model: str, hw_name: str, gpus: int, scenarios: list[tuple[str, str]]) -> list[dict]:
    m, hw = js.load_model(model), js.load_hardware(hw_name)
    bases = op.default_bases(m, hw, arch, gpus)
    stacked = jax.tree.map(np.asarray, op.stack(bases))
    cols = grid_columns(arch, bases, gpus, m)
    n_grid = len(cols["base"]) if cols else 0
    print(f"\n== {arch} {model} {hw_name} {gpus} GPUs: {len(bases)} bases, grid {n_grid:,} configurations", flush=True)

    # Compilation, timed apart from the steady-state runs below: one grid block and one optimiser call.
    w0, s0 = workload_of(scenarios[0][0]), slo_of(*scenarios[0])
    t = time.perf_counter()
    if n_grid:
        rows, _ = block_rows(cols, 0)
        jax.block_until_ready(js.estimate_batch(m, hw, materialise(arch, stacked, rows), w0, s0))
    grid_compile_s = time.perf_counter() - t
    t = time.perf_counter()
    op.optimize(m, hw, arch, bases, gpus, w0, s0, settings=SETTINGS)
    opt_first_s = time.perf_counter() - t

    out = []
    for wname, kind in scenarios:
        w, slo = workload_of(wname), slo_of(wname, kind)
        t = time.perf_counter()
        grid = evaluate_grid(m, hw, arch, stacked, cols, w, slo) if n_grid else {"best": None, "row": None, "size": 0,
                                                                                   "feasible": 0}
        grid_s = time.perf_counter() - t
        t = time.perf_counter()
        res = op.optimize(m, hw, arch, bases, gpus, w, slo, settings=SETTINGS)
        opt_s = time.perf_counter() - t

        rec: dict[str, Any] = {
            "arch": arch, "model": model, "hardware": hw_name, "gpus": gpus, "workload": wname, "slo": kind,
            "ttft_target_ms": float(slo.ttft_s) * 1e3, "tpot_target_ms": float(slo.tpot_s) * 1e3,
            "bases": len(bases), "grid_evaluations": grid["size"], "grid_feasible": grid["feasible"],
            "grid_best": grid["best"], "grid_config": describe(arch, bases, grid["row"]), "grid_s": grid_s,
            "opt_evaluations": res.model_evaluations, "opt_s": opt_s, "opt_relaxed": res.relaxed_tok_per_s_per_gpu,
            "opt_converged_starts": res.converged_starts, "opt_total_starts": res.total_starts,
            "grid_compile_s": grid_compile_s, "opt_first_call_s": opt_first_s,
        }
        legal = None
        if res.legal_config is not None:
            legal = float(res.legal_metrics.out_tok_per_s_per_gpu)
            # Independent re-check of the reported result with the hard model.
            r = js.estimate_batch(m, hw, op.stack([res.legal_config]), w, slo)
            r = jax.tree.map(lambda x: float(np.asarray(x)[0]), r)
            meets = (bool(r.feasible) and r.ttft_s <= float(slo.ttft_s) and r.tpot_s <= float(slo.tpot_s)
                     and r.memory_frac <= 1.0)
            row = row_of(arch, bases, res.legal_config)
            rec |= {"recheck_tok_per_s_per_gpu": r.out_tok_per_s_per_gpu, "recheck_ttft_ms": r.ttft_s * 1e3,
                    "recheck_tpot_ms": r.tpot_s * 1e3, "recheck_memory_frac": r.memory_frac,
                    "slo_violation": not meets, "in_grid": row is not None,
                    "opt_config": describe(arch, bases, row) if row else str(op.config_dict(arch, res.legal_config))}
        else:
            rec |= {"slo_violation": False, "in_grid": None, "opt_config": "none"}
        rec["opt_legal"] = legal
        if grid["best"] is None:
            rec["status"] = "both infeasible" if legal is None else "FLAG: optimiser reports a result, grid has none"
            rec["ratio"] = None
        else:
            rec["ratio"] = (legal or 0.0) / grid["best"]
            rec["status"] = "compared" if legal is not None else "optimiser found nothing"
        print(f"  {wname:9s} {kind:6s} grid {grid['best'] or 0:9.2f} ({grid['size']:,} evals, {grid_s:5.1f} s)  "
              f"opt {legal or 0:9.2f} ({res.model_evaluations:,} evals, {opt_s:5.1f} s)  "
              f"ratio {rec['ratio'] if rec['ratio'] is not None else float('nan'):.4f}  "
              f"{'VIOLATION ' if rec['slo_violation'] else ''}{rec['status']}",
              flush=True)
        out.append(rec)
    return out


def summarise(rows: list[dict]) -> dict[str, Any]:
    compared = [r for r in rows if r["grid_best"] is not None]
    ratios = [r["ratio"] for r in compared]
    return {
        "scenarios": len(rows),
        "with_feasible_grid": len(compared),
        "grid_infeasible": len(rows) - len(compared),
        "grid_infeasible_and_optimiser_none": sum(r["status"] == "both infeasible" for r in rows),
        "optimiser_found_nothing_but_grid_feasible": sum(r["status"] == "optimiser found nothing" for r in rows),
        "at_least_99pct": sum(x >= 0.99 for x in ratios),
        "share_at_least_99pct": (sum(x >= 0.99 for x in ratios) / len(ratios)) if ratios else None,
        "worst_ratio": min(ratios) if ratios else None,
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "ratio_above_1": sum(x > 1 + 1e-6 for x in ratios),
        "slo_violations": sum(bool(r["slo_violation"]) for r in rows),
        "optimiser_result_outside_grid": sum(r["in_grid"] is False for r in rows),
        "by_arch": {a: {"scenarios": sum(r["arch"] == a for r in compared),
                        "at_least_99pct": sum(r["arch"] == a and r["ratio"] >= 0.99 for r in compared)}
                    for a in sorted({r["arch"] for r in rows})},
        "median_grid_evaluations": float(np.median([r["grid_evaluations"] for r in rows])),
        "median_opt_evaluations": float(np.median([r["opt_evaluations"] for r in rows])),
        "median_grid_s": float(np.median([r["grid_s"] for r in rows])),
        "median_opt_s": float(np.median([r["opt_s"] for r in rows])),
    }


def table(rows: list[dict]) -> str:
    head = ("| # | arch | model | hardware | GPUs | workload | SLO (TTFT/TPOT ms) | grid best | optimiser legal "
            "| ratio | grid evals | opt evals | grid s | opt s | re-check | grid best config | optimiser config |")
    lines = [head, "|" + "---|" * 17]
    for i, r in enumerate(rows, 1):
        g = f"{r['grid_best']:.1f}" if r["grid_best"] is not None else "infeasible"
        o = f"{r['opt_legal']:.1f}" if r["opt_legal"] is not None else "none"
        ratio = f"{r['ratio']:.4f}" if r["ratio"] is not None else "–"
        if r["opt_legal"] is None:
            chk = "nothing reported"
        else:
            chk = ("VIOLATES SLO" if r["slo_violation"] else "feasible") + ("" if r["in_grid"] else ", outside grid")
        lines.append(f"| {i} | {r['arch']} | {r['model']} | {r['hardware']} | {r['gpus']} | {r['workload']} | "
                     f"{r['slo']} ({r['ttft_target_ms']:g}/{r['tpot_target_ms']:g}) | {g} | {o} | {ratio} | "
                     f"{r['grid_evaluations']:,} | {r['opt_evaluations']:,} | {r['grid_s']:.1f} | {r['opt_s']:.1f} | "
                     f"{chk} | {r['grid_config']} | {r['opt_config']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two groups and a 1e5-point high-dim search (smoke run)")
    ap.add_argument("--skip-highdim", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows: list[dict] = []
    for g in QUICK_GROUPS if args.quick else GROUPS:
        rows += run_group(*g)
    summary = summarise(rows)
    print("\nsummary:", json.dumps(summary, indent=1), flush=True)

    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                    "python": sys.version.split()[0]},
        "settings": {"optimiser": dataclasses.asdict(SETTINGS),
                     "grid_block": BLOCK, "afd_max_micro_batches": AFD_MAX_MICRO},
        "summary": summary,
        "scenarios": rows,
    }
    if not args.skip_highdim:
        sys.path.insert(0, str(HERE))
        import highdim

        result["highdim"] = highdim.main(samples=100_000 if args.quick else 1_000_000)
    result["total_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    keys = list(rows[0].keys() | set().union(*(r.keys() for r in rows)))
    order = [k for k in rows[0]] + sorted(k for k in keys if k not in rows[0])
    with open(args.out / "results.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=order)
        wr.writeheader()
        wr.writerows(rows)
    (args.out / "results.md").write_text(table(rows) + "\n")
    print(f"\nwrote {args.out}/results.json, results.csv, results.md in {result['total_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
