"""Throughput of the jitted, vmapped step model on this machine.

For N configurations (random valid DeepSeek-V3 deployments × random batches on H200), times
`jaxsim.blocked_vmap(step_cost)` (the body of `jaxsim.step_cost_batch`: vmap in cache-sized blocks):
compile time apart, one warm-up call, then the median of `--repeats` runs.
Beside it, the floor: a bare elementwise kernel over the same inputs and outputs (same array counts and
shapes, one multiply-add per output), which bounds what any model of this I/O can reach.
`--host-devices 2` splits the CPU into 2 XLA devices and shards the configuration axis over them
(shard_map), which is how both cores of a 2-core machine get used: XLA runs each block on one thread.
Appends one JSON row per (kernel, N) to `benchmarks/results/step_throughput.jsonl` and prints a table.

    python benchmarks/step_throughput.py --sizes 1e3,1e4,1e5,1e6,1e7
    python benchmarks/step_throughput.py --sizes 1e3,1e4,1e5,1e6,1e7 --host-devices 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--host-devices" in sys.argv:  # must precede the JAX import
    _k = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_k}"

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxsim as js
from jaxsim.batching import blocked_vmap, broadcast_batch

RESULTS = Path(__file__).parent / "results" / "step_throughput.jsonl"


def random_configs(n: int, seed: int = 0) -> tuple[js.Deployment, js.StepBatch]:
    """N valid DeepSeek-V3 deployments (tp·dp = ep, divisors of 128 heads / 256 experts) and batches."""
    rng = np.random.default_rng(seed)
    tp = rng.choice([1, 2, 4, 8], n).astype(np.float32)
    dp = rng.choice([1, 2, 4, 8], n).astype(np.float32)
    d = js.Deployment(tp=tp, dp=dp, pp=rng.choice([1, 2], n).astype(np.float32), ep=tp * dp, moe_tp=np.ones(n, np.float32),
                      two_batch_overlap=rng.integers(0, 2, n).astype(np.float32),
                      nextn=rng.integers(0, 2, n).astype(np.float32), nextn_accept=np.full(n, 0.7, np.float32),
                      gemm_weight_bytes=np.ones(n, np.float32), moe_weight_bytes=rng.choice([0.5, 1.0], n).astype(np.float32),
                      kv_bytes=np.ones(n, np.float32))
    b = js.StepBatch(decode_requests=rng.uniform(1, 256, n).astype(np.float32),
                     decode_context=rng.uniform(256, 16384, n).astype(np.float32),
                     prefill_tokens=rng.choice([0.0, 2048.0], n).astype(np.float32),
                     prefill_context=np.full(n, 3000.0, np.float32), prefill_sequences=np.ones(n, np.float32))
    return broadcast_batch((d, b), n)


def time_call(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call s, median steady-state s)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    jax.block_until_ready(fn(*args))  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def machine() -> dict[str, object]:
    dev = jax.devices()[0]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"device": dev.device_kind, "platform": dev.platform, "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "jax": jax.__version__, "commit": commit,
            "dtype": "float32"}


def record(rows: list[dict[str, object]], path: Path) -> None:
    """Append result rows as JSON lines."""
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"appended {len(rows)} rows to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6", help="comma-separated N")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--block", type=int, default=8192, help="configurations per lax.map block")
    ap.add_argument("--host-devices", type=int, default=1, help="XLA CPU devices to shard over")
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to the results file")
    args = ap.parse_args()
    model, hw = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm")

    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("configs",))
    spec = PartitionSpec("configs")

    def per_device(d: js.Deployment, b: js.StepBatch) -> js.StepCost:
        return blocked_vmap(lambda dd, bb: js.step_cost(model, hw, dd, bb), args.block)(d, b)

    if len(devices) > 1:
        step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec))
    else:
        step = jax.jit(per_device)

    def floor(d: js.Deployment, b: js.StepBatch) -> js.StepCost:
        """Same inputs, same number of outputs, one fused multiply-add each."""
        leaves = jax.tree.leaves((d, b))
        n_out = len(jax.tree.leaves(jax.eval_shape(lambda: js.step_cost(model, hw, js.Deployment(), js.StepBatch()))))
        return [leaves[i % len(leaves)] * 1.5 + leaves[(i + 1) % len(leaves)] for i in range(n_out)]

    floor_jit = jax.jit(floor)
    info = machine()
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        d, b = jax.device_put(random_configs(n), NamedSharding(mesh, spec))
        for kernel, fn in (("step_cost", step), ("elementwise_floor", floor_jit)):
            first, med = time_call(fn, d, b, repeats=args.repeats)
            row = {"kernel": kernel, "n": n, "block": args.block, "xla_devices": len(devices), "compile_plus_first_s": first, "median_s": med,
                   "evals_per_s": n / med, "repeats": args.repeats, **info}
            rows.append(row)
            print(f"{kernel:18s} N={n:>9d}  first call {first:7.3f} s  median {med * 1e3:9.3f} ms  "
                  f"{n / med:10.3e} evals/s")
    if not args.no_record:
        record(rows, RESULTS)


if __name__ == "__main__":
    main()
