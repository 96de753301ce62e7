"""`jaxsim calibrate`: fit the kernel-efficiency parameters of a system to measured kernel tables
(a thin layer over `jaxsim.calibrate`). Registered on the main app by `register(app)`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jaxsim import calibrate as C
from jaxsim.cli import print_json, user_errors
from jaxsim.presets import SpecError

Opt = typer.Option


def calibrate_cmd(
    system: Annotated[str, Opt(help="Hardware preset or alias (h100-sxm, h200-sxm, b200, gb200-nvl72).")],
    framework: Annotated[str | None, Opt(help="trtllm, sglang or vllm (default: the one with most measured rows; "
                                              "writes <system>.toml, else <system>-<framework>.toml).")] = None,
    data: Annotated[Path | None, Opt(help="A kernel CSV (jaxsim format) or an AIConfigurator systems/data folder "
                                          "(default: the installed aiconfigurator-core's).")] = None,
    out: Annotated[Path | None, Opt(help="Folder for the calibration file (default: specs/calibration).")] = None,
    accuracy_out: Annotated[Path | None, Opt("--accuracy-out", help="Also write predictions.parquet and "
                                                                    "heldout.csv (error per op family) here.")] = None,
    steps: Annotated[int, Opt(help="Adam steps of the fit.")] = 600,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit kernel efficiencies per op family and precision to measured kernel tables; write the calibration."""
    with user_errors():
        if framework is not None and framework not in C.FRAMEWORKS:
            raise SpecError(f"unknown framework {framework!r}; use one of {', '.join(C.FRAMEWORKS)}")
        if steps < 1:
            raise SpecError("--steps must be ≥ 1")
        cal = C.calibrate(system, framework, data, adam_steps=steps)
        command = "jaxsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = C.write(cal, out, default=framework is None, command=command)
        held = cal.accuracy(heldout=True)
        if accuracy_out is not None:
            accuracy_out.mkdir(parents=True, exist_ok=True)
            cal.table.to_parquet(accuracy_out / "predictions.parquet", index=False)
            held.to_csv(accuracy_out / "heldout.csv", index=False)
        if as_json:
            print_json({"system": cal.system, "framework": cal.framework, "file": str(path),
                        "values": cal.values, "fit_msle": cal.fit.loss, "heldout": held.to_dict("records")})
            return
        t = Table(title=f"{cal.system} ({cal.framework}): held-out kernel error", header_style="bold")
        for col in ("family", "n", "median |err| %", "p90 |err| %", "median err %"):
            t.add_column(col, justify="left" if col == "family" else "right")
        for r in held.to_dict("records"):
            t.add_row(r["family"], str(r["n"]), f"{r['median_ape_pct']:.1f}", f"{r['p90_ape_pct']:.1f}",
                      f"{r['median_signed_pct']:+.1f}")
        Console(highlight=False).print(t)
        print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the `calibrate` command to the `jaxsim` app."""
    app.command("calibrate")(calibrate_cmd)


if __name__ != "__main__":  # imported before jaxsim.cli finished: add the command to the main app now
    from jaxsim.cli import register_extension

    register_extension(__name__)
