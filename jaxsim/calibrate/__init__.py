"""Calibrate the kernel-cost model against measured kernel tables.

`calibrate(system, framework)` imports the tables (AIConfigurator's performance database, or a kernel CSV
in jaxsim's own format, see `tables`), holds out a fixed random 20 % of every table, fits the efficiency
parameters of the hardware with `fit.fit` on the rest, and reports the error on both parts.
`to_toml` / `write` turn the result into `specs/calibration/<system>[-<framework>].toml`, which
`presets.load_hardware` reads by default.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jaxsim import presets
from jaxsim.calibrate import fit as _fit
from jaxsim.calibrate.fit import FitResult, predict
from jaxsim.calibrate.tables import (
    COLUMNS,
    FAMILY,
    FRAMEWORKS,
    OPS,
    aic_data_root,
    check_table,
    framework_row_counts,
    heldout_mask,
    load_aic,
    read_csv,
    write_csv,
)
from jaxsim.presets import SpecError
from jaxsim.spec import Hardware

__all__ = [
    "COLUMNS",
    "FRAMEWORKS",
    "OPS",
    "Calibration",
    "accuracy",
    "calibrate",
    "check_table",
    "default_framework",
    "load_aic",
    "load_table",
    "read_csv",
    "to_toml",
    "write",
    "write_csv",
]

AIC_PACKAGE = "aiconfigurator-core"
HELDOUT_FRAC = 0.2
SPLIT_SEED = 0
# Share of the fitted per-call latencies a kernel pays inside a serving iteration (`Efficiency.serving_latency_frac`;
# the fit itself prices every kernel in isolation, share 1). Not fitted to the kernel tables: the collectors time
# each op alone, already replayed as a CUDA graph, so the tables cannot tell what fusion and overlapped launches
# (programmatic dependent launch) remove in an engine's decode step. Estimated on the declared light-load split of
# the deployment sample (experiments/validation/latency_frac.py: median signed TPOT error 0 at 0.43 with the rows
# read as their benchmark clients ran them and the Blackwell MoE refit; 0.40–0.41 before), rounded to the grid's
# 0.1 and written into every calibration file.
SERVING_LATENCY_FRAC = 0.4


@dataclass
class Calibration:
    """A fitted hardware and the record of how it was fitted."""

    system: str  # hardware preset name
    framework: str | None
    hw: Hardware  # fitted
    values: dict[str, float]  # fitted parameters (SI)
    fit: FitResult
    table: pd.DataFrame  # every row, with pred_ms, roofline_ms and `heldout`
    source: dict[str, str] = field(default_factory=dict)  # package, version, data

    def accuracy(self, heldout: bool = True) -> pd.DataFrame:
        """Error per op family on the held-out rows (or the fit rows)."""
        return accuracy(self.table[self.table["heldout"] == heldout])


def accuracy(pred: pd.DataFrame) -> pd.DataFrame:
    """Median / 90th-percentile absolute % error and median signed % error per op family."""
    err = (pred["pred_ms"] / pred["latency_ms"] - 1.0) * 100.0
    df = pd.DataFrame({"family": pred["op"].map(FAMILY), "ape": err.abs(), "signed": err})
    out = df.groupby("family", sort=True).agg(n=("ape", "size"), median_ape_pct=("ape", "median"),
                                              p90_ape_pct=("ape", lambda x: float(np.percentile(x, 90))),
                                              median_signed_pct=("signed", "median"))
    return out.reset_index()


def _package_version() -> str | None:
    try:
        return importlib.metadata.version(AIC_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def default_framework(system: str, data: str | Path | None = None) -> str:
    """The framework with the most measured rows for a system (TRT-LLM for every shipped system)."""
    counts = framework_row_counts(system, data)
    if not counts or max(counts.values()) == 0:
        return "trtllm"
    return max(FRAMEWORKS, key=lambda f: (counts.get(f, 0), -FRAMEWORKS.index(f)))


def load_table(system: str, framework: str | None = None, data: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The kernel table to fit and its provenance: a kernel CSV (`data` ending in .csv), an AIConfigurator
    `systems/data` folder, or (no `data`) the installed aiconfigurator-core's database."""
    if data is not None and Path(data).suffix.lower() == ".csv":
        df = read_csv(data)
        return df, {"package": "user CSV", "version": "", "data": str(data)}
    root = Path(data) if data is not None else aic_data_root()
    if root is None:
        raise SpecError(f"no measured kernel tables: {AIC_PACKAGE} is not installed; install the extra with "
                        "pip install 'jaxsim-serving[calibrate]' or pass --data (a kernel CSV or a systems/data "
                        "folder)")
    fw = framework or default_framework(system, root)
    df = load_aic(system, fw, root)
    version = _package_version() if data is None else _version_beside(root)
    return df, {"package": AIC_PACKAGE if version else "AIConfigurator-layout tables",
                "version": version or "", "data": str(root), "framework": fw}


def _version_beside(root: Path) -> str | None:
    """The aiconfigurator-core version of an installed `.../site-packages/aiconfigurator_core/systems/data`."""
    for parent in list(root.resolve().parents)[:4]:
        for info in sorted(parent.glob("aiconfigurator_core-*.dist-info")):
            return info.name.removeprefix("aiconfigurator_core-").removesuffix(".dist-info")
    return None


def calibrate(system: str, framework: str | None = None, data: str | Path | None = None,
              heldout_frac: float = HELDOUT_FRAC, seed: int = SPLIT_SEED, adam_steps: int = 600,
              lbfgs_steps: int = 0) -> Calibration:
    """Fit `system`'s efficiency parameters to measured kernel tables, holding out `heldout_frac` of each table.

    Args:
        system: a hardware preset name or alias (`h200-sxm`, `b200`, `gb200_sxm`).
        framework: `trtllm`, `sglang` or `vllm` (default: the one with most rows for the system).
        data: a kernel CSV, or an AIConfigurator `systems/data` folder (default: the installed package's).
    """
    base = presets.load_hardware(system, calibrated=False)
    df, source = load_table(system, framework, data)
    if df.empty:
        raise SpecError(f"no usable kernel rows for {system} in {source['data']}")
    held = heldout_mask(df, heldout_frac, seed)
    train = df[~held].reset_index(drop=True)
    if train.empty:
        raise SpecError("every row was held out; use a larger table or a smaller held-out fraction")
    result = _fit.fit(base, train, adam_steps=adam_steps, lbfgs_steps=lbfgs_steps)
    table = predict(result.hw, df)
    table["heldout"] = held
    fw = source.get("framework", framework)
    return Calibration(system=base.name, framework=fw, hw=result.hw, values=result.values, fit=result,
                       table=table, source=source)


# --------------------------------------------------------------------------------------------------
# The calibration file
# --------------------------------------------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else "nan"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def file_name(cal: Calibration, default: bool) -> str:
    """`<system>.toml` for the default framework's calibration, else `<system>-<framework>.toml`."""
    return f"{cal.system}.toml" if default or not cal.framework else f"{cal.system}-{cal.framework}.toml"


def to_toml(cal: Calibration, command: str = "") -> str:
    """The calibration file: fitted values in the units of the hardware files, with provenance."""
    fit_rows = cal.table[~cal.table["heldout"]]
    held_rows = cal.table[cal.table["heldout"]]
    count = lambda d: {k: int(v) for k, v in d["op"].map(FAMILY).value_counts().sort_index().items()}  # noqa: E731
    med = lambda d: {r["family"]: round(float(r["median_ape_pct"]), 2) for _, r in accuracy(d).iterrows()}  # noqa: E731
    src = cal.source
    what = f"{src.get('package', '')} {src.get('version', '')}".strip()
    tables_used = sorted(set(cal.table["source"]))
    folder = Path(src.get("data", "")).name or "data"
    lines = [
        f"# Fitted kernel efficiencies for {cal.system}: written by `jaxsim calibrate`; do not edit by hand.",
        f'name = "{cal.system}"',
        f"source = {_toml_value(what + ': measured kernel tables in ' + folder)}",
        "",
        "[provenance]",
        f"package = {_toml_value(src.get('package', ''))}",
        f"version = {_toml_value(src.get('version', ''))}",
        f"framework = {_toml_value(cal.framework or '')}",
        f"tables = {_toml_value(tables_used)}",
        f"points_fit = {_toml_value(count(fit_rows))}",
        f"points_heldout = {_toml_value(count(held_rows))}",
        f"heldout = {_toml_value(f'a fixed random {HELDOUT_FRAC:.0%} of each table (seed {SPLIT_SEED}), not fitted')}",
        f"fit_msle = {_toml_value(cal.fit.loss)}",
        f"fit_median_ape_pct = {_toml_value(med(fit_rows))}",
        f"heldout_median_ape_pct = {_toml_value(med(held_rows))}",
        f"method = {_toml_value(f'optax Adam + L-BFGS ({cal.fit.steps} steps) on the mean squared log error')}",
    ]
    if command:
        lines.append(f"command = {_toml_value(command)}")
    lines += ["", "[efficiency]"]
    up_latency = None
    for name, value in sorted(cal.values.items()):
        if name in _fit.HARDWARE_PARAMS:
            up_latency = value
            continue
        key = name[:-2] + "_us" if name.endswith("_s") else name
        lines.append(f"{key} = {_toml_value(value * 1e6 if name.endswith('_s') else value)}")
    lines.append(f"serving_latency_frac = {_toml_value(SERVING_LATENCY_FRAC)}  # not fitted: see "
                 "jaxsim.calibrate.SERVING_LATENCY_FRAC")
    if up_latency is not None:
        lines += ["", "[scale_up]", f"latency_us = {_toml_value(up_latency * 1e6)}  # per log2(n) hop of a collective"]
    return "\n".join(lines) + "\n"


def write(cal: Calibration, folder: str | Path | None = None, default: bool = True, command: str = "") -> Path:
    """Write the calibration file into `folder` (default `specs/calibration/`) and return its path."""
    folder = Path(folder) if folder is not None else presets.specs_dir() / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(cal, default)
    path.write_text(to_toml(cal, command))
    return path

