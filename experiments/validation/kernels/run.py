"""Kernel-level accuracy of the calibrated cost model on shapes held out from the fit.

For each shipped system: import the measured kernel tables of the framework with most data from
AIConfigurator's database, fit on 80 % of every table (fixed seed), write `specs/calibration/<system>.toml`,
and record the error on the held-out 20 % per op family in `results.csv`.

    python experiments/validation/kernels/run.py [--data .../aiconfigurator_core/systems/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from jaxsim import calibrate as C

SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="AIConfigurator systems/data folder (default: installed package)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--no-write", action="store_true", help="do not write specs/calibration/*.toml")
    args = ap.parse_args()
    rows = []
    for system in args.systems.split(","):
        t0 = time.perf_counter()
        cal = C.calibrate(system, None, args.data)
        elapsed = time.perf_counter() - t0
        if not args.no_write:
            command = f"python experiments/validation/kernels/run.py --systems {system}"
            path = C.write(cal, default=True, command=command)
            print(f"wrote {path}")
        acc = cal.accuracy(heldout=True)
        acc.insert(0, "framework", cal.framework)
        acc.insert(0, "system", cal.system)
        acc["fit_s"] = round(elapsed, 1)
        rows.append(acc)
        print(acc.to_string(index=False), flush=True)
    out = pd.concat(rows, ignore_index=True)
    if set(args.systems.split(",")) == set(SYSTEMS):
        out.round(2).to_csv(HERE / "results.csv", index=False)
        print(f"wrote {HERE / 'results.csv'}")


if __name__ == "__main__":
    main()
