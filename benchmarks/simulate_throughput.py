"""Speed of the request-level simulator (`jaxsim.simulate`) on this machine.

Random aggregated DeepSeek-V3 configurations on H200 (attention DP 8 or 16 with EP over them, batch 64–256
requests per rank, prefill budget 2k–8k tokens, two-batch overlap on/off), the chat workload (4k cached
prefix, 512 input, 256 output tokens), each under a closed loop that keeps its slots full. Each
configuration simulates `--requests` requests in its simulated group (the requests one attention-DP rank
serves; the system serves groups × as many). Measured: compile + first call apart, then the median of
`--repeats` calls; "request-iterations/s" = Σ over configurations of (requests advanced per scheduler
iteration), i.e. one request moved by one step, per second of wall time.

    python benchmarks/simulate_throughput.py --configs 100 --requests 10000            # one XLA device
    python benchmarks/simulate_throughput.py --configs 100 --requests 10000 --host-devices 2

`--host-devices 2` splits the CPU into 2 XLA devices and shards the configurations over them (shard_map):
XLA runs one vmapped loop per device on one thread, so that is how both cores of a 2-core machine work.
Appends one JSON row per run to `benchmarks/results/simulate_throughput.jsonl`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--host-devices" in sys.argv:  # must precede the JAX import
    _k = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_k}"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxsim as js
from jaxsim import simulate as sim
from jaxsim.simulate.engine import run_requests, unit_of
from jaxsim.simulate.stats import summarize
from jaxsim.simulate.traffic import generate

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import machine, record

RESULTS = Path(__file__).parent / "results" / "simulate_throughput.jsonl"


def random_configs(n: int, seed: int = 0) -> js.AggConfig:
    rng = np.random.default_rng(seed)
    dp = rng.choice([8.0, 16.0], n).astype(np.float32)
    d = js.Deployment(tp=np.ones(n, np.float32), dp=dp, ep=dp, moe_tp=np.ones(n, np.float32),
                      two_batch_overlap=rng.integers(0, 2, n).astype(np.float32),
                      gemm_weight_bytes=np.ones(n, np.float32), moe_weight_bytes=np.ones(n, np.float32),
                      kv_bytes=np.ones(n, np.float32))
    batch = rng.choice([64.0, 128.0, 192.0, 256.0], n).astype(np.float32)
    chunk = rng.choice([2048.0, 4096.0, 8192.0], n).astype(np.float32)
    return js.AggConfig(d, batch=batch, chunk=chunk, workers=np.ones(n, np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=int, default=100)
    ap.add_argument("--requests", type=int, default=10000, help="requests per configuration (its simulated group)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--host-devices", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    m, hw, w = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm"), js.load_workload("chat")
    n = args.configs
    cfg = random_configs(n)
    groups = np.asarray(cfg.deploy.dp)
    traffic = sim.Traffic(arrival="closed", concurrency=jnp.asarray(np.asarray(cfg.batch) * groups))
    cfg, traffic = jax.tree.map(lambda x: x if x.shape[:1] == (n,) else jnp.broadcast_to(x, (n, *x.shape)),
                                (cfg, traffic))
    settings = sim.Settings(requests=args.requests, slots=256, window=64, scan_length=256,
                            max_iterations=args.requests * 300, samples=64, sample_every=4096, timeline=1)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    tab = jax.jit(jax.vmap(lambda c, t, k: generate(k, t, w, args.requests, unit_of(m, hw, c, w, t).groups,
                                                    m.max_context)))(cfg, traffic, keys)

    def per_device(c: js.AggConfig, t: sim.Traffic, tb: sim.Requests) -> sim.Summary:
        return jax.vmap(lambda c_, t_, tb_: summarize(run_requests(m, hw, c_, w, t_, tb_, settings), 0.1))(c, t, tb)

    devices = jax.devices()
    if len(devices) > 1:
        mesh = Mesh(np.array(devices), ("configs",))
        spec = PartitionSpec("configs")
        fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
        cfg, traffic, tab = jax.device_put((cfg, traffic, tab), NamedSharding(mesh, spec))
    else:
        fn = jax.jit(per_device)

    t0 = time.perf_counter()
    s = jax.block_until_ready(fn(cfg, traffic, tab))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        s = jax.block_until_ready(fn(cfg, traffic, tab))
        runs.append(time.perf_counter() - t0)
    med = float(np.median(runs))
    req_iters = float(np.asarray(s.request_iterations, np.float64).sum())
    completed = int(np.asarray(s.completed).sum())
    row = {"benchmark": "simulate_closed_loop_chat", "configs": n, "requests_per_config": args.requests,
           "completed": completed, "request_iterations": req_iters,
           "scheduler_iterations_max": int(np.max(np.asarray(s.iterations))),
           "compile_plus_first_s": first, "median_s": med, "runs_s": runs,
           "request_iterations_per_s": req_iters / med, "xla_devices": len(devices),
           "load_avg_1min": os.getloadavg()[0], **machine()}
    print(f"{n} configurations × {args.requests} requests: {completed} completed, {req_iters:.3e} request-iterations; "
          f"compile + first call {first:.1f} s, median {med:.2f} s → {req_iters / med:.3e} request-iterations/s "
          f"({len(devices)} XLA device(s), 1-min load average {row['load_avg_1min']:.1f})")
    if not args.no_record:
        record([row], RESULTS)


if __name__ == "__main__":
    main()
