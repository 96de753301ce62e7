"""How repeatable the measurements are: rows of the silicon sample that describe the same deployment (system,
model family, framework, mode, precision, ISL, OSL, concurrency and every parallelism / batch column) but are
separate measurements (not exact copies), each compared with the median of its replicates.

    python experiments/validation/replicates.py path/to/silicon_sample.csv [experiments/validation/results]

Needs a `jaxsim validate` output folder (details.csv(.gz): status, family, exact_copy) beside the sample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from jaxsim.validate import MOE_FAMILIES

CONFIG = ["system", "family", "framework", "mode", "precision", "gemm_quant_mode", "moe_quant_mode", "isl", "osl",
          "concurrency", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "batch_size",
          "prefill_tp_size", "prefill_num_workers", "prefill_attention_dp_size", "prefill_moe_ep_size",
          "prefill_batch_size", "decode_tp_size", "decode_num_workers", "decode_attention_dp_size",
          "decode_moe_ep_size", "decode_batch_size"]


def replicate_deviation(sample: pd.DataFrame, details: pd.DataFrame) -> pd.DataFrame:
    """Median |measured / median of the other replicates − 1| for TTFT and TPOT, all rows and MoE rows."""
    ok = details[(details["status"] == "ok") & ~details["exact_copy"].astype(bool)]
    rows = ok[["id", "family", "framework", "concurrency", "silicon_ttft_ms", "silicon_tpot_ms"]].merge(
        sample.drop(columns=["silicon_ttft_ms", "silicon_tpot_ms"]), on="id")
    rows[CONFIG] = rows[CONFIG].astype(str)
    dev = {"ttft": [], "tpot": []}
    moe = []
    for _, g in rows.groupby(CONFIG, dropna=False):
        if len(g) < 2:
            continue
        for metric in dev:
            v = np.log(g[f"silicon_{metric}_ms"].to_numpy())
            dev[metric] += [v[i] - np.median(np.delete(v, i)) for i in range(len(v))]
        moe += list(g["family"].isin(MOE_FAMILIES))
    mask = np.array(moe, bool)
    out = []
    for label, keep in (("all", np.ones_like(mask)), ("MoE", mask)):
        out.append({"rows": label, "replicated rows": int(keep.sum()),
                    **{f"{m.upper()} median abs dev %": 100 * float(np.median(np.abs(np.expm1(np.array(d)[keep]))))
                       for m, d in dev.items()},
                    "TTFT within 20 %": 100 * float(np.mean(np.abs(np.expm1(np.array(dev["ttft"])[keep])) <= 0.2))})
    return pd.DataFrame(out)


def main(sample_csv: str, folder: str) -> None:
    root = Path(folder)
    details = root / "details.csv"
    table = replicate_deviation(pd.read_csv(sample_csv), pd.read_csv(details if details.is_file()
                                                                     else root / "details.csv.gz"))
    print(table.to_string(index=False, float_format="{:.1f}".format))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent / "results"))
