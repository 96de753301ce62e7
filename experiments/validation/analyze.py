"""Tables for experiments/validation/README.md from a `jaxsim validate` output folder.

    python experiments/validation/analyze.py experiments/validation/results > experiments/validation/results/tables.md

Reads `errors.csv`, `summary.json` and `details.csv(.gz)` (every row with its status, labels and the
model's diagnostics); prints Markdown. Nothing here feeds back into the model: it only slices the errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

STATS = (("median_ape", "median abs %"), ("mean_ape", "mean abs %"), ("within_10_pct", "≤10 %"),
         ("within_20_pct", "≤20 %"), ("median_signed_pct", "median signed %"))


def markdown(df: pd.DataFrame, floatfmt: str = "{:.1f}") -> str:
    """A DataFrame as a GitHub Markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---"
                                                            for c in df.columns) + "|"]
    for row in df.itertuples(index=False):
        cells = [floatfmt.format(v) if isinstance(v, float) and np.isfinite(v) else ("–" if isinstance(v, float)
                 else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_section(errors: pd.DataFrame) -> str:
    out = []
    for metric in ("ttft", "tpot"):
        t = errors.assign(group=np.where(errors["grouping"].isin(["all", "moe"]), errors["group"],
                                         errors["grouping"] + ": " + errors["group"]))
        t = t[["group", "n", *(f"{metric}_{k}" for k, _ in STATS)]]
        t.columns = ["group", "n", *(f"{metric.upper()} {label}" for _, label in STATS)]
        out.append(f"### {metric.upper()}\n\n{markdown(t)}\n")
    return "\n".join(out)


def ratio_by_concurrency(ok: pd.DataFrame) -> pd.DataFrame:
    bins = [0, 4, 16, 64, 256, 1024, np.inf]
    labels = ["1–4", "5–16", "17–64", "65–256", "257–1024", ">1024"]
    d = ok.assign(conc=pd.cut(ok["concurrency"], bins, labels=labels),
                  ttft_ratio=ok["pred_ttft_ms"] / ok["silicon_ttft_ms"],
                  tpot_ratio=ok["pred_tpot_ms"] / ok["silicon_tpot_ms"])
    keys = ["mode", "harness", "conc"] if "harness" in d else ["mode", "conc"]
    t = d.groupby(keys, observed=True).agg(
        n=("id", "size"), measured_ttft_ms=("silicon_ttft_ms", "median"), predicted_ttft_ms=("pred_ttft_ms", "median"),
        ttft_pred_over_meas=("ttft_ratio", "median"), tpot_pred_over_meas=("tpot_ratio", "median")).reset_index()
    for k in keys:
        t[k] = t[k].astype(str)
    return t.rename(columns={"conc": "concurrency"})


def ttft_floor(ok: pd.DataFrame) -> pd.DataFrame:
    low = ok[(ok["mode"] == "agg") & (ok["concurrency"] <= 4)]
    gap = low["silicon_ttft_ms"] - low["pred_ttft_ms"]
    t = low.assign(gap=gap).groupby("framework").agg(
        n=("id", "size"), measured_ttft_ms=("silicon_ttft_ms", "median"), predicted_ttft_ms=("pred_ttft_ms", "median"),
        measured_minus_predicted_ms=("gap", "median")).reset_index()
    return t


def tpot_by_isl_osl(ok: pd.DataFrame) -> pd.DataFrame:
    agg = ok[(ok["mode"] == "agg") & (ok["concurrency"] <= 16)]
    agg = agg.assign(kind=np.where(agg["moe"], "MoE", "dense"),
                     isl_over_osl=pd.cut(agg["isl"] / agg["osl"], [0, 0.5, 2, 6, np.inf],
                                         labels=["≤ 0.5", "0.5–2", "2–6", "> 6"]),
                     ratio=agg["pred_tpot_ms"] / agg["silicon_tpot_ms"])
    t = agg.groupby(["kind", "isl_over_osl"], observed=True).agg(
        n=("id", "size"), tpot_pred_over_meas=("ratio", "median"),
        measured_tpot_ms=("silicon_tpot_ms", "median"), predicted_tpot_ms=("pred_tpot_ms", "median")).reset_index()
    t["isl_over_osl"] = t["isl_over_osl"].astype(str)
    return t


def osl_sweep_example(ok: pd.DataFrame) -> pd.DataFrame:
    """One layout at one load, only the lengths change: Qwen3-235B on 4 × H100 (TRT-LLM), concurrency 4."""
    d = ok[(ok["model"] == "Qwen/Qwen3-235B-A22B-FP8") & (ok["system"] == "h100_sxm") & (ok["concurrency"] == 4)
           & (ok["framework"] == "trtllm") & ok["id"].str.contains("_tp4_")]
    return d[["isl", "osl", "silicon_tpot_ms", "pred_tpot_ms"]].sort_values(["isl", "osl"]).head(12)


def littles_law(ok: pd.DataFrame) -> pd.DataFrame:
    """The model's own closed loop: N / throughput should equal TTFT + (OSL − 1) × TPOT."""
    cycle_s = ok["concurrency"] / ok["pred_requests_per_s"]
    latency_s = (ok["pred_ttft_ms"] + (ok["osl"] - 1) * ok["pred_tpot_ms"]) / 1e3
    d = ok.assign(missing_wait_s=cycle_s - latency_s, frac=(cycle_s - latency_s) / latency_s)
    return d.groupby("mode").agg(n=("id", "size"), rows_missing_over_10pct=("frac", lambda f: int((f > 0.1).sum())),
                                 median_missing_wait_s=("missing_wait_s", "median"),
                                 max_missing_wait_s=("missing_wait_s", "max")).reset_index()


MOE = ("deepseek", "qwen3-moe", "gpt-oss", "kimi")
CORRECTION_GROUPS = (("family", "framework", "mode", "system"),
                     ("family", "framework", "mode", "system", "concurrency band"),
                     ("family", "framework", "mode", "system", "concurrency band", "isl", "osl"))


def group_correction_bound(ok: pd.DataFrame) -> pd.DataFrame:
    """MoE TTFT error if every row's prediction were rescaled by the median pred / meas of the *other* rows of its
    group (leave-one-out; a row alone in its group keeps its prediction): how far a correction per group, the
    kind a fitted constant per framework, model or load band gives, could take the median at best."""
    moe = ok[ok["family"].isin(MOE)].assign(
        log_ratio=lambda d: np.log(d["pred_ttft_ms"] / d["silicon_ttft_ms"]),
        **{"concurrency band": lambda d: pd.cut(d["concurrency"], [0, 4, 16, 64, 256, np.inf]).astype(str)})
    out = [{"correction per": "none", "rows": len(moe),
            "MoE TTFT median abs %": 100 * float(np.median(np.abs(np.expm1(moe["log_ratio"]))))}]
    for keys in CORRECTION_GROUPS:
        residuals = []
        for _, g in moe.groupby(list(keys), observed=True):
            v = g["log_ratio"].to_numpy()
            for i in range(len(v)):
                others = np.delete(v, i)
                residuals.append(v[i] - (np.median(others) if len(others) else 0.0))
        out.append({"correction per": " × ".join(keys), "rows": len(residuals),
                    "MoE TTFT median abs %": 100 * float(np.median(np.abs(np.expm1(residuals))))})
    return pd.DataFrame(out)


def held_out(rows: pd.DataFrame) -> pd.DataFrame:
    """Error of the rows outside the calibration split the request overheads were estimated from."""
    from jaxsim.validate import error_table

    keep = rows[~rows["overhead_split"].astype(bool)]
    t = error_table(keep, ("moe", "all", "mode", "framework"))
    cols = ["group", "n", *(f"{m}_{k}" for m in ("ttft", "tpot") for k in ("median_ape", "mean_ape", "within_20_pct",
                                                                             "median_signed_pct"))]
    return t[cols]


def main(folder: str) -> None:
    root = Path(folder)
    details = root / "details.csv"
    rows = pd.read_csv(details if details.is_file() else root / "details.csv.gz")
    summary = json.loads((root / "summary.json").read_text())
    errors = pd.read_csv(root / "errors.csv")
    ok = rows[rows["status"] == "ok"]
    print("## Counts\n")
    counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    print(markdown(pd.DataFrame({"what": list(counts), "rows": list(counts.values())})))
    for key in ("skipped_rows_by_reason", "unmodelled_measurements_by_reason", "predicted_verdicts"):
        print(f"\n{key}:\n")
        print(markdown(pd.DataFrame({"reason": list(summary[key]), "n": list(summary[key].values())})))
    print("\n## Error tables\n")
    print(error_section(errors))
    if "overhead_split" in rows.columns:
        print("## Held out from the request-overhead estimate (rows outside `in_overhead_split`)\n")
        print(markdown(held_out(rows)))
        print()
    print("## Predicted / measured by concurrency (medians)\n")
    print(markdown(ratio_by_concurrency(ok), "{:.3g}"))
    print("\n## TTFT at concurrency ≤ 4 (agg): measured − predicted (medians)\n")
    print(markdown(ttft_floor(ok), "{:.1f}"))
    print("\n## TPOT at concurrency ≤ 16 (agg) by ISL / OSL (medians)\n")
    print(markdown(tpot_by_isl_osl(ok), "{:.3g}"))
    print("\n## One layout, lengths varied: Qwen3-235B-A22B-FP8, 4 × H100, TRT-LLM TP4/EP4, concurrency 4\n")
    print(markdown(osl_sweep_example(ok), "{:.1f}"))
    print("\n## The model's closed loop: concurrency / throughput − (TTFT + (OSL − 1) × TPOT)\n")
    print(markdown(littles_law(ok), "{:.3g}"))
    print("\n## What a per-group TTFT correction could reach (MoE rows, leave-one-out group medians)\n")
    print(markdown(group_correction_bound(ok), "{:.1f}"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "results"))
