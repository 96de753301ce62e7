"""Upper bounds of three candidate TTFT mechanisms that were sized and not kept (README, "What is left", item 8).

    python experiments/validation/probes.py path/to/silicon_sample.csv [experiments/validation/results]

Reads the final predictions (`details.csv(.gz)` of a `jaxsim validate` output folder) and prints, for the MoE rows,
the median absolute % error of TTFT (and of TPOT where the probe changes it):

1. a constant X added to every P/D prediction (a second request overhead: the request passes two engines'
   front ends), scanned over X — an in-sample best case;
2. the front end slowing with the token stream it serves: agg TTFT + overhead × (1 / (1 − ρ) − 1),
   ρ = κ × concurrency / predicted TPOT (output tokens per second), scanned over κ — an in-sample best case;
3. Hopper running FP4 / INT4 experts at the BF16 rate (W4A16): every H100 / H200 row predicted again with
   `fp4_flop_per_s` set to the BF16 peak (the shipped specs run FP4 at the FP8 rate), ~1 min on 2 cores;
4. the DeepSeek TRT-LLM intercept the fourth probe looked for: median measured − predicted TTFT of the agg rows
   at concurrency ≤ 4, by system and ISL.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import jaxsim.validate as V

HOPPER = ("h100_sxm", "h200_sxm")


def median_ape(pred: pd.Series | np.ndarray, meas: pd.Series) -> float:
    return float(np.median(np.abs(np.asarray(pred) - meas) / meas * 100.0))


class W4A16Catalog(V.Catalog):
    """The presets, with FP4 operands on Hopper at the BF16 tensor-core rate."""

    def hardware(self, system: str, framework: str | None = None) -> V.Hardware | V.SkipReason:
        hw = super().hardware(system, framework)
        if isinstance(hw, V.Hardware) and system.strip().lower() in HOPPER:
            return dataclasses.replace(hw, fp4_flop_per_s=hw.bf16_flop_per_s)
        return hw


def main(data: str, results: str) -> None:
    folder = Path(results)
    details = pd.read_csv(folder / "details.csv.gz" if (folder / "details.csv.gz").is_file()
                          else folder / "details.csv")
    ok = details[details["status"] == V.OK].copy()
    moe = ok[ok["family"].isin(V.MOE_FAMILIES)]
    meas = moe["silicon_ttft_ms"]
    print(f"MoE rows: {len(moe)}; TTFT {median_ape(moe['pred_ttft_ms'], meas):.1f} %, "
          f"TPOT {median_ape(moe['pred_tpot_ms'], moe['silicon_tpot_ms']):.1f} %")

    disagg = (moe["mode"] == "disagg").to_numpy()
    print("\n1. P/D + X ms: X, MoE TTFT %, MoE P/D TTFT %")
    for x in (0, 20, 40, 60, 80, 100, 150):
        pred = moe["pred_ttft_ms"] + np.where(disagg, x, 0.0)
        print(f"   {x:4d}  {median_ape(pred, meas):5.1f}  {median_ape(pred[disagg], meas[disagg]):5.1f}")

    overhead_ms = moe["framework"].map({k: f.request_overhead_s * 1e3 for k, f in V.FRAMEWORKS.items()}).fillna(0.0)
    tokens_per_s = moe["concurrency"] / moe["pred_tpot_ms"] * 1e3
    print("\n2. front-end load, κ µs per output token: κ, MoE TTFT %")
    for kappa in (0, 10, 20, 40, 60, 80, 100, 150):
        rho = np.clip(tokens_per_s * kappa * 1e-6, 0.0, 0.95)
        pred = moe["pred_ttft_ms"] + np.where(disagg, 0.0, overhead_ms * (1.0 / (1.0 - rho) - 1.0))
        print(f"   {kappa:4d}  {median_ape(pred, meas):5.1f}")

    sample = V.load_silicon(data)
    hopper = sample[sample["system"].astype(str).str.strip().str.lower().isin(HOPPER)].reset_index(drop=True)
    result = V.validate(hopper, catalog=W4A16Catalog(V.default_model_configs(Path(data))))
    w4 = result.rows[result.rows["status"] == V.OK][["id", "pred_ttft_ms", "pred_tpot_ms"]]
    both = moe.merge(w4, on="id", how="left", suffixes=("", "_w4"))
    ttft = both["pred_ttft_ms_w4"].fillna(both["pred_ttft_ms"])
    tpot = both["pred_tpot_ms_w4"].fillna(both["pred_tpot_ms"])
    print(f"\n3. Hopper FP4 at the BF16 rate ({len(hopper)} Hopper rows predicted again): "
          f"MoE TTFT {median_ape(ttft, both['silicon_ttft_ms']):.1f} %, "
          f"TPOT {median_ape(tpot, both['silicon_tpot_ms']):.1f} %")
    print("   family, framework, system: n, TTFT % base → W4A16, TPOT % base → W4A16")
    hop = both[both["pred_ttft_ms_w4"].notna() & both["family"].isin(["gpt-oss", "kimi"])]
    for (family, fw, system), g in hop.groupby(["family", "framework", "system"]):
        print(f"   {family}, {fw}, {system}: {len(g)}, "
              f"{median_ape(g['pred_ttft_ms'], g['silicon_ttft_ms']):.1f} → "
              f"{median_ape(g['pred_ttft_ms_w4'], g['silicon_ttft_ms']):.1f}, "
              f"{median_ape(g['pred_tpot_ms'], g['silicon_tpot_ms']):.1f} → "
              f"{median_ape(g['pred_tpot_ms_w4'], g['silicon_tpot_ms']):.1f}")

    light = ok[(ok["family"] == "deepseek") & (ok["framework"] == "trtllm") & (ok["mode"] == "agg")
               & (ok["concurrency"] <= 4)]
    print("\n4. DeepSeek TRT-LLM agg, concurrency ≤ 4: system, ISL: n, median measured − predicted TTFT ms")
    for (system, isl), g in light.groupby(["system", "isl"]):
        print(f"   {system}, {isl:.0f}: {len(g)}, {float(np.median(g['silicon_ttft_ms'] - g['pred_ttft_ms'])):+.0f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "experiments/validation/results")
