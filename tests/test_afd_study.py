"""The AFD study script stays runnable: its --quick slice writes every table and plot (slow: ~15–45 s, compiles)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "experiments" / "afd_study" / "run.py"


def _load():
    spec = importlib.util.spec_from_file_location("afd_study_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_pareto_mask_matches_library():
    import numpy as np

    from jaxsim.sweep import pareto_mask

    run = _load()
    rng = np.random.default_rng(0)
    x, y = rng.random(500), rng.random(500)
    x[::7] = x[1::7][: len(x[::7])]  # ties in x
    assert (run.pareto(x, y) == pareto_mask(x, y)).all()


@pytest.mark.slow
def test_quick_study_writes_everything(tmp_path):
    run = _load()
    assert run.main(["--quick", "--no-optimizer", "--no-library-check", "--out", str(tmp_path)]) == 0
    for name in ("best.csv", "slo_tightness.csv", "frontiers.csv", "splits.csv", "tables.md", "summary.json",
                 "pareto_deepseek-v3.2.png", "slo_deepseek-v3.2.png", "split_vs_context.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    best = list(csv.DictReader((tmp_path / "best.csv").open()))
    assert {r["arch"] for r in best} == {"agg", "disagg", "agg+afd", "disagg+afd"}
    for r in best:
        if r["feasible_best"] == "True":  # the headline rows meet the strict SLO they are reported under
            assert float(r["tpot_ms"]) <= 15.0 + 1e-3 and float(r["ttft_ms"]) <= 50.0 + 1e-3
    claims = json.loads((tmp_path / "summary.json").read_text())["claims"]
    assert set(claims["peak_winner"].values()) <= {"agg", "disagg", "agg+afd", "disagg+afd"}


def test_optimizer_budget_skips_and_writes(tmp_path):
    """Once the optimiser's time budget is spent, no call starts: every row is recorded as skipped, the
    CSV is written and the table names the reason."""
    run = _load()
    rows = run.optimizer_study(("deepseek-v3.2",), ("b200",), ("chat",), {}, print, budget_s=-1.0,
                               csv_path=tmp_path / "optimizer.csv")
    assert [r["arch"] for r in rows] == ["agg", "disagg", "agg+afd"]
    assert all("budget" in r["skipped"] for r in rows)
    assert len(list(csv.DictReader((tmp_path / "optimizer.csv").open()))) == 3
    assert run.optimizer_table(rows).count("optimiser time budget of -1 s spent") == 3
