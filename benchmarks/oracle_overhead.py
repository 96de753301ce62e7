"""Per-call cost of `jaxsim.oracle.StepOracle` (the step-cost library for other simulators).

For batches of n = 1 … 1024 random iteration descriptions (DeepSeek-V3 on 8 × H200, attention DP 8 / EP 8,
decode batches with or without a prefill chunk), times `oracle(...)` (NumPy in, NumPy out, input checks
included) and `oracle.call_packed(x)` (a prepared float32 array, no checks) over `--calls` calls each
after a warm-up, and reports the median. Per-call overhead = the median time of a call of one description;
the marginal cost per description = the slope from n = 1 to n = 1024. Compile time (one executable per
bucket, once per model / hardware / deployment) is reported apart.

    python benchmarks/oracle_overhead.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import jaxsim as js
from jaxsim.oracle import INPUTS, StepOracle

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import machine, record

RESULTS = Path(__file__).parent / "results" / "oracle_overhead.jsonl"


def median_call_s(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    runs = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,16,128,1024")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    m, hw = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm")
    d = js.Deployment(tp=1, dp=8, ep=8, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)
    buckets = sorted(set(sizes))
    t0 = time.perf_counter()
    oracle = StepOracle(m, hw, d, buckets=buckets)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    info = machine()
    rows = []
    for n in sizes:
        dec = rng.integers(1, 256, n).astype(np.float64)
        ctx = rng.uniform(256, 16384, n)
        pre = np.where(rng.random(n) < 0.3, 2048.0, 0.0)
        pctx = rng.uniform(0, 4096, n)
        x = np.zeros((len(INPUTS), n), np.float32)
        x[0], x[1], x[3], x[4], x[5] = dec, ctx, pre, pctx, pre > 0
        call = median_call_s(lambda: oracle(dec, ctx, pre, pctx), args.calls)  # noqa: B023
        packed = median_call_s(lambda: oracle.call_packed(x), args.calls)  # noqa: B023
        row = {"benchmark": "oracle_call", "n": n, "median_call_s": call, "median_packed_call_s": packed,
               "calls": args.calls, "compile_all_buckets_s": compile_s, "buckets": buckets,
               "compilations": oracle.compilations, "load_avg_1min": os.getloadavg()[0], **info}
        rows.append(row)
        print(f"n={n:5d}  call {call * 1e6:8.1f} µs   packed {packed * 1e6:8.1f} µs   "
              f"({call / n * 1e6:7.2f} µs per description)")
    one = next((r for r in rows if r["n"] == 1), rows[0])
    big = rows[-1]
    slope = (big["median_call_s"] - one["median_call_s"]) / max(big["n"] - one["n"], 1)
    print(f"per-call overhead (n = 1): {one['median_call_s'] * 1e6:.1f} µs checked, "
          f"{one['median_packed_call_s'] * 1e6:.1f} µs packed; marginal {slope * 1e6:.3f} µs per description; "
          f"compile {compile_s:.1f} s for {oracle.compilations} buckets; 1-min load average {os.getloadavg()[0]:.1f}")
    if not args.no_record:
        record(rows, RESULTS)


if __name__ == "__main__":
    main()
