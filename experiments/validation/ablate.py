"""The error after each model change, on the same data and kernels: runs `jaxsim.validate` with the framework
fields switched on one at a time and prints the MoE / all / mode / framework medians as Markdown.

    python experiments/validation/ablate.py [path/to/silicon_sample.csv] > experiments/validation/results/ablation.md

Steps (each includes the ones before; the request overheads are the final `FRAMEWORKS` in every step from
`+ request overhead` on): `estimate defaults` (bursty prefill, closed-loop groups, P/D first decode step and
bottleneck wait — the model `jaxsim estimate` runs; `frameworks={}`, steady state `rounds=0`, every row read as
AIConfigurator's aiperf template), `+ scheduler` (SGLang's prefill apart from decode), `+ request overhead`,
`+ measured first round` (the clients' synchronised start counted once in 20 rounds, every row),
`+ InferenceX client, grouped` (the InferenceX rows at their client's mean lengths and 10 rounds, arrivals still
grouped, with the engine options their launch scripts set: the prefill budgets apply, the holds only take effect
once arrivals spread), `+ spread arrivals` (those rows' random lengths spread the arrivals after the first round:
what `jaxsim validate` reports). The model before these changes is not importable from this tree; its numbers come
from running the previous commit (README).
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
    zero = {k: dataclasses.replace(v, request_overhead_s=0.0) for k, v in V.FRAMEWORKS.items()}
    inferencex = V.HARNESSES["inferencex"]
    # (frameworks, rounds for every row or None for each client's, how the InferenceX rows are read)
    steps = {"estimate defaults": ({}, 0.0, V.HARNESSES["aiperf"]),
             "+ scheduler": (zero, 0.0, V.HARNESSES["aiperf"]),
             "+ request overhead": (V.FRAMEWORKS, 0.0, V.HARNESSES["aiperf"]),
             "+ measured first round": (V.FRAMEWORKS, V.BENCH_ROUNDS, V.HARNESSES["aiperf"]),
             "+ InferenceX client, grouped": (V.FRAMEWORKS, None, dataclasses.replace(inferencex, arrivals="grouped")),
             "+ spread arrivals": (V.FRAMEWORKS, None, inferencex)}
    print("| step | group | n | TTFT median abs % | TTFT median signed % | TTFT ≤20 % | TPOT median abs % "
          "| TPOT median signed % | TPOT ≤20 % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (frameworks, rounds, harness) in steps.items():
        V.HARNESSES["inferencex"] = harness
        try:
            result = V.validate(df, model_configs=configs, frameworks=frameworks, rounds=rounds)
        finally:
            V.HARNESSES["inferencex"] = inferencex
        for r in result.errors(("moe", "all", "mode", "framework")).to_dict("records"):
            cells = [f"{r[f'{m}_{k}']:.1f}" for m in ("ttft", "tpot")
                     for k in ("median_ape", "median_signed_pct", "within_20_pct")]
            print(f"| {name} | {r['group']} | {r['n']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
