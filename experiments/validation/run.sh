#!/usr/bin/env bash
# Validate jaxsim against the measured deployments AIConfigurator ships (see README.md in this folder).
#   experiments/validation/run.sh [path/to/silicon_sample.csv]
# Default data: systems/silicon_sample.csv of an installed aiconfigurator-core (pip install 'jaxsim-serving[calibrate]').
# `jaxsim validate` is the same command once registered on the main CLI; `python -m jaxsim.cli_validate` always works.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=experiments/validation/results
DATA_ARGS=()
if [[ $# -ge 1 ]]; then DATA_ARGS=(--data "$1"); fi
python -m jaxsim.cli_validate "${DATA_ARGS[@]}" --out "$OUT"
python experiments/validation/analyze.py "$OUT" > "$OUT/tables.md"
gzip -f "$OUT/details.csv"   # every row with status, detail and diagnostics; ~0.3 MB compressed
