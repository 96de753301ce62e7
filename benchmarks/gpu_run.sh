#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md in one script (run on the lent device machine, whose
# image has JAX with CUDA, equinox, optax, orbax, typer, rich, pandas and pyarrow; jaxsim runs from the tree).
#   bash benchmarks/gpu_run.sh OUTDIR
set -u
out=${1:-/tmp/gpu_out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}
{ nvidia-smi -L; $py -c "import jax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$out/env.txt"
$py benchmarks/step_throughput.py --sizes 1e5,1e6,1e7,1e8 --block 4194304 --repeats 5 2>&1 | tee "$out/step.txt"
$py benchmarks/estimate_throughput.py --sizes 1e5,1e6,1e7 --block 1048576 --repeats 5 2>&1 | tee "$out/estimate.txt"
$py benchmarks/sweep_throughput.py --sizes 1e7,1e8,1e9 2>&1 | tee "$out/sweep.txt"
# The peer scenario of sweep_throughput.py --peer as a command, cold then warm XLA cache.
for label in cold warm; do
  TIMEFORMAT="jaxsim sweep (peer scenario, $label XLA cache): wall %R s"
  { time JAXSIM_CACHE_DIR=/tmp/jaxsim_xla $py -m jaxsim.cli sweep --model deepseek-v3 --system h200-sxm --isl 4000 \
      --osl 1000 --ttft 2000 --tpot 50 --total-gpus 64 --modes agg,disagg --out /tmp/peer_out --json \
      > "$out/peer_$label.json" 2> "$out/peer_$label.err"; } 2>&1 | tee -a "$out/peer.txt"
done
cp benchmarks/results/*.jsonl "$out/" 2>/dev/null
tar -C "$out" -cf /tmp/gpu_results.tar . && rm -rf "${out:?}"/* && mv /tmp/gpu_results.tar "$out/"
