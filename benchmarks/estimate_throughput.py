"""Throughput of full serving-metric evaluations (`jaxsim.estimate`) per architecture on this machine.

For N random DeepSeek-V3 configurations on H200 with the chat workload and SLO, times the blocked,
vmapped `estimate` of each architecture (agg, disagg, agg+afd, disagg+afd): compile time apart, one
warm-up call, then the median of `--repeats` runs. Every metric of the `Metrics` pytree is computed
(TTFT, TPOT, throughput, memory per pool, MFU, feasibility, reason, breakdown). `--host-devices 2` shards
the configurations over 2 XLA CPU devices (both cores). Rows go to `results/estimate_throughput.jsonl`.

    python benchmarks/estimate_throughput.py --sizes 1e4,1e5,1e6
    python benchmarks/estimate_throughput.py --sizes 1e4,1e5,1e6 --host-devices 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__" and "--host-devices" in sys.argv:  # must precede the JAX import
    _k = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_k}"

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import machine, record, time_call

import jaxsim as js
from jaxsim.batching import blocked_vmap, broadcast_batch

RESULTS = Path(__file__).parent / "results" / "estimate_throughput.jsonl"
F32 = np.float32


def deployments(rng: np.random.Generator, n: int, afd: bool = False) -> js.Deployment:
    """Random DeepSeek-V3 layouts: tp·dp = ep·moe_tp (or, for AFD, any ep dividing 256 experts)."""
    tp = rng.choice([1, 2, 4, 8], n).astype(F32)
    dp = rng.choice([1, 2, 4, 8, 16], n).astype(F32)
    ep = rng.choice([4, 8, 16, 32, 64], n).astype(F32) if afd else tp * dp
    ones = np.ones(n, F32)
    return js.Deployment(tp=tp, dp=dp, pp=ones, ep=ep, moe_tp=ones,
                         two_batch_overlap=rng.integers(0, 2, n).astype(F32) * (not afd),
                         nextn=rng.integers(0, 2, n).astype(F32), nextn_accept=np.full(n, 0.7, F32),
                         gemm_weight_bytes=ones, moe_weight_bytes=rng.choice([0.5, 1.0], n).astype(F32),
                         kv_bytes=ones)


def configs(arch: str, n: int, seed: int = 0) -> js.serve.Config:
    rng = np.random.default_rng(seed)
    batch = rng.uniform(1, 256, n).astype(F32)
    chunk = rng.choice([1024, 2048, 4096, 8192, 16384], n).astype(F32)
    if arch == "agg":
        return js.AggConfig(deployments(rng, n), batch=batch, chunk=chunk, workers=np.ones(n, F32))
    if arch == "disagg":
        return js.DisaggConfig(deployments(rng, n), deployments(rng, n), prefill_batch=rng.uniform(1, 8, n).astype(F32),
                               decode_batch=batch, prefill_workers=np.ones(n, F32), decode_workers=np.zeros(n, F32))
    base = arch.split("+")[0]
    return js.AFDConfig(deployments(rng, n, afd=True), micro_batches=rng.integers(1, 5, n).astype(F32), batch=batch,
                        chunk=chunk, workers=np.full(n, 0.0 if base == "disagg" else 1.0, F32), base=base,
                        prefill=deployments(rng, n), prefill_batch=rng.uniform(1, 8, n).astype(F32),
                        prefill_workers=np.ones(n, F32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e4,1e5,1e6")
    ap.add_argument("--archs", default=",".join(js.ARCHITECTURES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=int, default=8192)
    ap.add_argument("--host-devices", type=int, default=1, help="XLA CPU devices to shard over")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    m, hw = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm")
    w, slo = js.load_workload("chat"), js.load_slo("chat")
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("configs",))
    spec = PartitionSpec("configs")

    def per_device(cfg: js.serve.Config) -> js.Metrics:
        return blocked_vmap(lambda c: js.estimate(m, hw, c, w, slo), args.block)(cfg)

    run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec)) if len(devices) > 1 \
        else jax.jit(per_device)
    info = machine()
    rows = []
    for arch in args.archs.split(","):
        for n in (int(float(s)) for s in args.sizes.split(",")):
            cfg = jax.device_put(broadcast_batch(configs(arch, n), n), NamedSharding(mesh, spec))
            first, med = time_call(run, cfg, repeats=args.repeats)
            rows.append({"arch": arch, "n": n, "block": args.block, "xla_devices": len(devices),
                         "compile_plus_first_s": first, "median_s": med, "evals_per_s": n / med,
                         "repeats": args.repeats, **info})
            print(f"{arch:11s} N={n:>8d}  first call {first:6.2f} s  median {med * 1e3:9.2f} ms  {n / med:10.3e} evals/s")
    if not args.no_record:
        record(rows, RESULTS)


if __name__ == "__main__":
    main()
