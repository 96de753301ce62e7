"""Estimate each framework's fixed per-request TTFT overhead from the declared calibration split.

    python experiments/validation/overhead.py [path/to/silicon_sample.csv]

The split (`jaxsim.validate.in_overhead_split`): agg rows at concurrency ≤ 4 — where nothing queues, so the gap
between measured and predicted TTFT is the time outside the engine iterations (HTTP, tokenisation, scheduling,
streaming the first token) — and only the quarter of them whose id hashes to 0 mod 4. Those rows are predicted
with the overheads set to 0 and the median gap per framework is printed (ms) — the values to put in
`jaxsim.validate.FRAMEWORKS`. Every other row (all loads, all of disagg, three quarters of the light-load rows) is
held out from this estimate; `analyze.py` reports the error on the held-out rows apart.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

import jaxsim.validate as V


def main(data: str | None) -> None:
    path = data if data is not None else V.find_aiconfigurator() / "systems" / "silicon_sample.csv"  # type: ignore[operator]
    df = V.load_silicon(path)
    split = [V.in_overhead_split(str(i), str(m).strip().lower(), float(c))
             for i, m, c in zip(df["id"], df["mode"], df["concurrency"], strict=True)]
    zero = {k: dataclasses.replace(v, request_overhead_s=0.0) for k, v in V.FRAMEWORKS.items()}
    configs = V.default_model_configs(Path(path))
    result = V.validate(df[split].reset_index(drop=True), model_configs=configs, frameworks=zero)
    ok = result.rows[result.rows["status"] == V.OK]
    print("framework  rows  median(measured − predicted TTFT) ms   (current FRAMEWORKS value, ms)")
    for fw, g in ok.groupby("framework"):
        gap = float(np.median(g["silicon_ttft_ms"] - g["pred_ttft_ms"]))
        current = V.FRAMEWORKS.get(str(fw), V.Framework()).request_overhead_s * 1e3
        print(f"{fw:9s} {len(g):5d}  {gap:8.1f}   ({current:.0f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
