"""Held-out error of the library's decode-attention form (`kernels.decode_paths_s`) through the library fit.

Runs `jaxsim.calibrate.calibrate` (600 Adam steps, every fit row) on each system's generation_attention and
generation_mla rows only, and prints the median |error| % on the fit and held-out rows per op and KV dtype.

    python experiments/validation/kernels/proto/decode_attention_library.py [--data DIR] [--systems ...]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import jaxsim.calibrate as C

DEFAULT_DATA = "/work/aicv/lib/python3.11/site-packages/aiconfigurator_core/systems/data"
SYSTEMS = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")
OPS = ("generation_attention", "generation_mla")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    load = C.load_table
    rows = []
    for system in args.systems:
        df, source = load(system, None, args.data)
        gen = df[df.op.isin(OPS)].reset_index(drop=True)
        C.load_table = lambda *a, _g=gen, _s=source, **k: (_g.copy(), _s)  # the split is per table: unchanged
        t0 = time.time()
        cal = C.calibrate(system, adam_steps=args.steps)
        fit_s = time.time() - t0
        t = cal.table
        assert (t.pred_ms >= t.roofline_ms * (1 - 1e-6)).all(), f"{system}: below the roofline"
        ape = (t.pred_ms / t.latency_ms - 1).abs() * 100
        for (op, kv, held), v in ape.groupby([t.op, t.kv_dtype, t.heldout]):
            rows.append(dict(system=system, op=op, kv=kv, heldout=held, median_ape_pct=v.median()))
        for (op, held), v in ape.groupby([t.op, t.heldout]):
            rows.append(dict(system=system, op=op, kv="both", heldout=held, median_ape_pct=v.median()))
        print(f"{system}: fit {fit_s:.1f} s, loss {cal.fit.loss:.4f}", flush=True)
    C.load_table = load
    res = pd.DataFrame(rows)
    for held in (True, False):
        print(f"\n{'held-out' if held else 'fit'} rows: median |error| %")
        tab = res[res.heldout == held].pivot_table(index=["op", "kv"], columns="system", values="median_ape_pct")
        print(tab[list(args.systems)].round(1))


if __name__ == "__main__":
    main()
