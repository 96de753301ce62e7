"""Held-out accuracy of prefill attention alone: the library's fit (`calibrate.fit.fit`, GROUPS["attention"], which
switches the tile model `ctx_tiles` on) on the context_attention / context_mla rows of the measured tables only.

Same split as `jaxsim calibrate` (a fixed random 20 % of every table held out, seed 0), same Adam settings; the
other op families are left out so it runs in about a minute per system. Writes nothing under specs/.

    python experiments/validation/kernels/context_attention.py [--data DIR] [--systems h200-sxm,b200] [--steps 600]
"""

from __future__ import annotations

import argparse
import time

from jaxsim import calibrate as C
from jaxsim import presets
from jaxsim.calibrate import fit as FT
from jaxsim.calibrate.tables import heldout_mask

CONTEXT_OPS = ("context_attention", "context_mla")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="AIConfigurator systems/data folder (default: installed package)")
    ap.add_argument("--systems", default="h200-sxm")
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    for system in args.systems.split(","):
        df, _ = C.load_table(system, None, args.data)
        held = heldout_mask(df)
        keep = df["op"].isin(CONTEXT_OPS).to_numpy()
        df, held = df[keep].reset_index(drop=True), held[keep]
        t0 = time.perf_counter()
        result = FT.fit(presets.load_hardware(system, calibrated=False), df[~held].reset_index(drop=True),
                        adam_steps=args.steps)
        fit_s = time.perf_counter() - t0
        pred = FT.predict(result.hw, df)
        below = int((pred["pred_ms"] < pred["roofline_ms"] * (1 - 1e-6)).sum())
        print(f"{system}: {args.steps} Adam steps in {fit_s:.1f} s, fit MSLE {result.loss:.4f}, "
              f"rows below the roofline: {below}")
        for name, rows in (("held out", pred[held]), ("fitted", pred[~held])):
            print(f"  {name}:\n" + C.accuracy(rows).round(2).to_string(index=False))
        print("  parameters: " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(result.values.items())), flush=True)


if __name__ == "__main__":
    main()
