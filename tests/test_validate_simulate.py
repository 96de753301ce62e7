"""`jaxsim validate --simulate`: the simulator's predictions beside the analytic model's, on the hand-made sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from jaxsim import validate as V
from jaxsim.cli_validate import register

TINY = Path(__file__).parent / "data" / "silicon_tiny.csv"


@pytest.fixture(scope="module")
def simulated() -> V.ValidationResult:
    return V.validate(V.load_silicon(TINY), simulate=True, simulate_sample=2, seed=1)


@pytest.mark.slow  # 30-70 s on 2 cores: kept out of the default run's 10-minute budget
def test_sample_is_seeded_and_only_predicted_rows_are_simulated(simulated: V.ValidationResult) -> None:
    rows = simulated.rows
    done = np.isfinite(rows["sim_ttft_ms"]) | np.isfinite(rows["sim_tpot_ms"])
    assert int(done.sum()) == 2  # the sample size, drawn among the 4 predicted rows
    assert set(rows.loc[done, "status"]) == {"ok"}
    again = V.validate(V.load_silicon(TINY), simulate=True, simulate_sample=2, seed=1).rows
    assert list(again.loc[done, "id"]) == list(rows.loc[done, "id"])
    # the analytic predictions are the same with or without the simulator
    plain = V.validate(V.load_silicon(TINY)).rows
    np.testing.assert_array_equal(plain["pred_ttft_ms"].to_numpy(), rows["pred_ttft_ms"].to_numpy())


@pytest.mark.slow  # its fixture simulates validation rows: 30 s on 2 cores
def test_side_by_side_statistics_over_the_same_rows(simulated: V.ValidationResult) -> None:
    rows = simulated.rows
    mask = V.simulated_mask(rows)
    assert mask.sum() >= 1
    table = V.side_by_side(rows).set_index("grouping")
    top = table.loc["all"]
    assert top["n"] == mask.sum()
    same = rows[mask]
    sim_err = np.abs(same["sim_ttft_ms"] / same["silicon_ttft_ms"] - 1) * 100
    ana_err = np.abs(same["pred_tpot_ms"] / same["silicon_tpot_ms"] - 1) * 100
    assert top["ttft_median_ape_sim"] == pytest.approx(float(np.median(sim_err)), rel=1e-9)
    assert top["tpot_median_ape_analytic"] == pytest.approx(float(np.median(ana_err)), rel=1e-9)


@pytest.mark.slow
def test_cli_simulate_writes_the_side_by_side_table(tmp_path: Path) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """A group, so `validate` stays a sub-command."""

    register(app)
    out = CliRunner().invoke(app, ["validate", "--data", str(TINY), "--out", str(tmp_path), "--simulate",
                                   "--simulate-sample", "1", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["simulated"]["sample"] == 1 and summary["simulated"]["rows_simulated"] <= 1
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert {"sim_ttft_ms", "sim_tpot_ms"} <= set(pred.columns)
    assert (tmp_path / "errors_simulated.csv").is_file()
    bad = CliRunner().invoke(app, ["validate", "--data", str(TINY), "--out", str(tmp_path / "b"), "--simulate",
                                   "--simulate-sample", "0"])
    assert bad.exit_code == 2 and "simulate-sample" in bad.output
