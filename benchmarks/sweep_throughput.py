"""Sweep throughput, memory and compile time from 1e4 to 1e8 configurations, and the peer side by side.

Part 1 (`--sizes`): for each N, a fresh process runs `jaxsim.sweep` over an aggregated-serving space of
DeepSeek-V3 on 64 × H200 (chat) whose batch axis is a grid sized to give N configurations, keeping the
Pareto rows (memory flat in N). It reports compile time, total time, evaluations per second (excluding
compile) and the process's peak resident memory (`ru_maxrss`), so flat memory shows as a flat column.

Part 2 (`--peer`): the search `aiconfigurator cli default --model-path deepseek-ai/DeepSeek-V3 --total-gpus 64
--system h200_sxm --backend sglang --isl 4000 --osl 1000 --ttft 2000 --tpot 50` performs, timed as a
command, next to `jaxsim sweep` on the same scenario and architectures (agg, disagg) over its default
space, timed the same way (a fresh process: interpreter start, imports, compile and evaluation all
included) with a cold compile cache and with a warm one. The peer is skipped when its command is missing.

    python benchmarks/sweep_throughput.py --sizes 1e4,1e5,1e6,1e7,1e8 [--host-devices 2]
    python benchmarks/sweep_throughput.py --peer [--aiconfigurator /path/to/aiconfigurator]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import machine, record

RESULTS = Path(__file__).parent / "results" / "sweep_throughput.jsonl"

CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, jaxsim as js
from jaxsim import sweep as sw
n = int(sys.argv[1])
chunk, block = (int(a) if a != "auto" else None for a in sys.argv[2:4])
base = {"tp": [1, 2, 4, 8], "dp": [1, 2, 4, 8, 16, 32, 64], "pp": [1], "moe_tp": [1, 2], "chunk": [512, 2048, 8192],
        "gemm_bytes": [1], "moe_bytes": [1], "kv_bytes": [1], "nextn": [0, 1], "tbo": [0, 1]}
per_batch = int(np.prod([len(v) for v in base.values()]))
k = max(1, round(n / per_batch))
space = sw.DesignSpace("agg", {**base, "batch": list(np.linspace(1, 512, k))}, 64)
m, hw = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm")
w, slo = js.load_workload("chat"), js.load_slo("chat")
t = time.perf_counter()
r = sw.sweep([space], m, hw, w, slo, keep="pareto", chunk=chunk, block=block)
total = time.perf_counter() - t
print(json.dumps({"n": space.size, "compile_s": r.compile_s, "total_s": total,
                  "evals_per_s": space.size / max(total - r.compile_s, 1e-9), "feasible": r.feasible["agg"],
                  "kept_rows": int(len(r.columns["index"])), "devices": len(jax.devices()), "chunk": chunk, "block": block,
                  "platform": jax.devices()[0].platform,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SCENARIO = ["--model", "deepseek-v3", "--system", "h200-sxm", "--isl", "4000", "--osl", "1000", "--ttft", "2000",
            "--tpot", "50", "--total-gpus", "64"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - t, proc


def sizes_part(sizes: list[int], host_devices: int, chunk: str, block: str) -> list[dict[str, object]]:
    env = dict(os.environ)
    if host_devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={host_devices}"
    rows = []
    for n in sizes:
        wall, proc = timed([sys.executable, "-c", CHILD, str(n), str(chunk), str(block)], env)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(kind="sweep_size", process_wall_s=wall)
        rows.append(row)
        print(f"N={row['n']:>11,d}  devices {row['devices']}  compile {row['compile_s']:5.2f} s  total "
              f"{row['total_s']:7.2f} s  {row['evals_per_s']:9.3e} evals/s  peak RSS {row['peak_rss_mib']:7.0f} MiB"
              f"  feasible {row['feasible']:,}  kept {row['kept_rows']:,}")
    return rows


def peer_part(aic: str | None) -> list[dict[str, object]]:
    rows = []
    jaxsim = shutil.which("jaxsim") or str(Path(sys.executable).parent / "jaxsim")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JAXSIM_CACHE_DIR": str(Path(tmp) / "xla")}
        for label in ("jaxsim cold compile cache", "jaxsim warm compile cache"):
            cmd = [jaxsim, "sweep", *SCENARIO, "--modes", "agg,disagg", "--out", str(Path(tmp) / "out"), "--json"]
            wall, proc = timed(cmd, env)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            data = json.loads(proc.stdout)
            best = {k: (v or {}).get("tokens_per_s_per_gpu") for k, v in data["best"].items()}
            rows.append({"kind": "peer", "tool": label, "wall_s": wall, "configs_evaluated": data["configs_evaluated"],
                         "in_process_s": data["elapsed_s"], "compile_s": data["compile_s"],
                         "best_tok_per_s_per_gpu": best})
            print(f"{label:28s} wall {wall:7.2f} s  ({data['configs_evaluated']:,} configurations; sweep call "
                  f"{data['elapsed_s']:.2f} s of which compile {data['compile_s']:.2f} s)  best {best}")
    aic = aic or shutil.which("aiconfigurator")
    if aic is None:
        print("aiconfigurator not installed: peer skipped")
        return rows
    cmd = [aic, "cli", "default", "--model-path", "deepseek-ai/DeepSeek-V3", "--total-gpus", "64", "--system",
           "h200_sxm", "--backend", "sglang", "--isl", "4000", "--osl", "1000", "--ttft", "2000", "--tpot", "50"]
    wall, proc = timed(cmd)
    text = proc.stdout + proc.stderr
    results = [int(x.split("with ")[1].split(" results")[0]) for x in text.splitlines() if "completed with" in x]
    best = [x.strip() for x in text.splitlines() if "Best Experiment Chosen" in x]
    rows.append({"kind": "peer", "tool": "aiconfigurator 0.12.0 cli default", "wall_s": wall,
                 "returncode": proc.returncode, "results_reported": results, "best_line": best[:1],
                 "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024})
    print(f"{'aiconfigurator cli default':28s} wall {wall:7.2f} s  results per experiment {results}  {best[:1]}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="", help="comma-separated N for part 1")
    ap.add_argument("--host-devices", type=int, default=1)
    ap.add_argument("--chunk", default="auto", help="configurations per jitted call (auto: the library's default)")
    ap.add_argument("--block", default="auto", help="configurations vmapped at once within a chunk (auto: default)")
    ap.add_argument("--peer", action="store_true", help="run part 2")
    ap.add_argument("--aiconfigurator", default=None, help="path of the aiconfigurator command")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rows = []
    if args.sizes:
        rows += sizes_part([int(float(s)) for s in args.sizes.split(",")], args.host_devices, args.chunk, args.block)
    if args.peer:
        rows += peer_part(args.aiconfigurator)
    info = machine()
    rows = [{**r, **info} for r in rows]
    if rows and not args.no_record:
        record(rows, RESULTS)


if __name__ == "__main__":
    main()
