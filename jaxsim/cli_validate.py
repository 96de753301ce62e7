"""`jaxsim validate`: predict measured deployments and report the error (a thin layer over `jaxsim.validate`).

Registered on the main app by `register(app)`; also runnable alone as `python -m jaxsim.cli_validate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from jaxsim import validate as V
from jaxsim.cli import check_rounds, print_json, user_errors
from jaxsim.presets import SpecError

Opt = typer.Option

EXTRA = "pip install 'jaxsim-serving[calibrate]'"
STAT_COLUMNS = (("median_ape", "med |err|%"), ("mean_ape", "mean |err|%"), ("within_10_pct", "≤10%"),
                ("within_20_pct", "≤20%"), ("median_signed_pct", "med err%"))


def default_data() -> Path:
    """`systems/silicon_sample.csv` of the installed aiconfigurator-core, or a SpecError saying how to get it."""
    pkg = V.find_aiconfigurator()
    csv = pkg / "systems" / "silicon_sample.csv" if pkg is not None else None
    if csv is None or not csv.is_file():
        raise SpecError(f"no measured data: aiconfigurator-core is not installed; install the extra with {EXTRA} "
                        "or pass --data CSV")
    return csv


def _finite(obj: Any) -> Any:
    """NaN → None throughout, so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def print_errors(table: pd.DataFrame, console: Console) -> None:
    """The error table: one block of rows per grouping, TTFT and TPOT statistics side by side."""
    t = Table(title="absolute % error of predicted vs measured TTFT and TPOT (modelled rows)", header_style="bold")
    t.add_column("group", no_wrap=True)
    t.add_column("n", justify="right", no_wrap=True, min_width=4)
    for metric in ("TTFT", "TPOT"):
        for _, label in STAT_COLUMNS:
            t.add_column(f"{metric}\n{label}", justify="right", no_wrap=True)
    previous = None
    for row in table.to_dict("records"):
        if previous is not None and row["grouping"] != previous:
            t.add_section()
        previous = row["grouping"]
        name = row["group"] if row["grouping"] in ("all", "moe") else f"{row['grouping']}: {row['group']}"
        t.add_row(name, str(row["n"]), *(_pct(row[f"{m}_{k}"]) for m in ("ttft", "tpot") for k, _ in STAT_COLUMNS))
    console.print(t)


def print_counts(counts: dict[str, Any], console: Console) -> None:
    """Rows read, measurements, modelled, and skipped rows by reason."""
    t = Table(title="rows", header_style="bold")
    t.add_column("what")
    t.add_column("rows", justify="right")
    t.add_row("read", str(counts["rows"]))
    t.add_row("distinct measurements", str(counts["distinct_measurements"]))
    t.add_row("modelled (predicted)", str(counts["modelled"]))
    t.add_section()
    for reason, n in counts["skipped_rows_by_reason"].items():
        t.add_row(f"skipped: {reason}", str(n))
    console.print(t)


def validate_cmd(
    data: Annotated[Path | None, Opt(help="Silicon CSV (default: aiconfigurator-core's systems/silicon_sample.csv).")]
    = None,
    out: Annotated[Path, Opt(help="Output folder: predictions.csv, details.csv, errors.csv, summary.json.")]
    = Path("jaxsim-validate"),
    model_configs: Annotated[Path | None, Opt(help="Folder of <org>--<name>_config.json for models without a preset "
                                                   "(default: beside the data, else aiconfigurator-core's).")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object (counts and error table).")] = False,
    simulate: Annotated[bool, Opt("--simulate", help="Also replay each row's benchmark with the request-level "
                                  "simulator and report its error beside the analytic model's.")] = False,
    simulate_sample: Annotated[int | None, Opt(help="With --simulate: simulate this many predicted rows, drawn "
                                               "with --seed (about a second per row on a CPU) [default: all].")]
    = None,
    seed: Annotated[int, Opt(help="Seed of the --simulate-sample draw.")] = 0,
    rounds: Annotated[float | None, Opt(help="Measured requests per client after the clients' synchronised start "
                                        "(the first round is a prefill wave) for every row; 0 = steady state only "
                                        "[default: each row's benchmark client's: 20 aiperf, 10 InferenceX].")]
    = None,
) -> None:
    """Predict every row of AIConfigurator's measured deployments (agg and disagg) and report the error."""
    with user_errors():
        if rounds is not None:
            check_rounds(rounds)
        path = data if data is not None else default_data()
        df = V.load_silicon(path)
        configs = model_configs if model_configs is not None else V.default_model_configs(path)
        if configs is not None and not configs.is_dir():
            raise SpecError(f"--model-configs {configs}: not a folder")
        result = V.validate(df, model_configs=configs, simulate=simulate, simulate_sample=simulate_sample,
                            seed=seed, rounds=rounds)
        errors = result.errors()
        counts = result.counts()
        out.mkdir(parents=True, exist_ok=True)
        result.write_predictions(out / "predictions.csv")
        result.rows.to_csv(out / "details.csv", index=False)
        errors.to_csv(out / "errors.csv", index=False)
        summary = _finite({"data": str(path), "model_configs": str(configs) if configs else None, "rounds": rounds,
                           **counts,
                           "errors": errors.to_dict("records")})
        both = None
        if simulate:
            both = V.side_by_side(result.rows)
            both.to_csv(out / "errors_simulated.csv", index=False)
            mask = V.simulated_mask(result.rows)
            summary["simulated"] = {"rows_simulated": int(mask.sum()), "sample": simulate_sample, "seed": seed,
                                    "side_by_side": _finite(both.to_dict("records"))}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if as_json:
            print_json(summary)
            return
        console = Console(highlight=False, width=max(Console().width, 200))
        print_counts(counts, console)
        print_errors(errors, console)
        if both is not None:
            print_side_by_side(both, console)
        print(f"wrote predictions.csv, details.csv, errors.csv{', errors_simulated.csv' if simulate else ''} and "
              f"summary.json to {out}")


def print_side_by_side(table: pd.DataFrame, console: Console) -> None:
    """Median absolute % error of the analytic model and of the simulator over the same simulated rows."""
    t = Table(title="analytic model vs request-level simulator, same rows: median |err| % (median signed err %)",
              header_style="bold")
    for name in ("group", "n", "TTFT analytic", "TTFT simulated", "TPOT analytic", "TPOT simulated"):
        t.add_column(name, justify="left" if name == "group" else "right", no_wrap=True)
    for row in table.to_dict("records"):
        name = row["group"] if row["grouping"] in ("all", "moe") else f"{row['grouping']}: {row['group']}"
        cells = [f"{_pct(row[f'{m}_median_ape_{k}'])} ({_pct(row[f'{m}_median_signed_pct_{k}'])})"
                 for m in ("ttft", "tpot") for k in ("analytic", "sim")]
        t.add_row(name, str(row["n"]), *cells)
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the `validate` command to the `jaxsim` app."""
    app.command("validate")(validate_cmd)


def main() -> None:
    """`python -m jaxsim.cli_validate [--data CSV] [--out DIR] [--json]`."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(validate_cmd)
    app()


if __name__ == "__main__":
    main()
else:  # imported before jaxsim.cli finished: add the command to the main app now
    from jaxsim.cli import register_extension

    register_extension(__name__)
