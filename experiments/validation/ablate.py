"""The error after each model change, on the same data and kernels: runs `jaxsim.validate` with the framework
fields switched on one at a time and prints the MoE / all / mode / framework medians as Markdown.

    python experiments/validation/ablate.py [path/to/silicon_sample.csv] > experiments/validation/results/ablation.md

Steps (each includes the ones before): `estimate defaults` (bursty prefill, closed-loop groups, P/D first decode
step and bottleneck wait — the model `jaxsim estimate` runs; `frameworks={}`, steady state `rounds=0`), `+ scheduler`
(SGLang's prefill apart from decode), `+ request overhead` (`FRAMEWORKS`), `+ measured first round` (the clients'
synchronised start counted once in `BENCH_ROUNDS` = 20 rounds: what `jaxsim validate` reports). The model before
these changes is not importable from this tree; its numbers come from running the previous commit (README).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jaxsim.validate as V


def main(data: str | None) -> None:
    path = data if data is not None else V.find_aiconfigurator() / "systems" / "silicon_sample.csv"  # type: ignore[operator]
    df = V.load_silicon(path)
    configs = V.default_model_configs(Path(path))
    steps = {"estimate defaults": ({}, 0.0),
             "+ scheduler": ({k: dataclasses.replace(v, request_overhead_s=0.0) for k, v in V.FRAMEWORKS.items()}, 0.0),
             "+ request overhead": (V.FRAMEWORKS, 0.0),
             "+ measured first round": (V.FRAMEWORKS, V.BENCH_ROUNDS)}
    print("| step | group | n | TTFT median abs % | TTFT median signed % | TTFT ≤20 % | TPOT median abs % "
          "| TPOT median signed % | TPOT ≤20 % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (frameworks, rounds) in steps.items():
        result = V.validate(df, model_configs=configs, frameworks=frameworks, rounds=rounds)
        for r in result.errors(("moe", "all", "mode", "framework")).to_dict("records"):
            cells = [f"{r[f'{m}_{k}']:.1f}" for m in ("ttft", "tpot")
                     for k in ("median_ape", "median_signed_pct", "within_20_pct")]
            print(f"| {name} | {r['group']} | {r['n']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
