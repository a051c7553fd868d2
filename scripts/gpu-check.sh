#!/usr/bin/env bash
# The GPU check: one prepared run on an NVIDIA machine, offline, from the source tree, within
# 8 minutes (scripts/gpu_check.py says what it runs and why).
#
#   bash scripts/gpu-check.sh            # run it: log and reports into $OUT, or gpu-check/
#   bash scripts/gpu-check.sh --plan     # each step with RUN or SKIPPED and the reason; exit 0
#
# PYTHON picks the interpreter (default python3); GPU_CHECK_SECONDS the budget (default 450).
# Exit codes: 0 every step passed or was skipped, 1 a step failed or was cut, 2 no NVIDIA GPU.
set -euo pipefail
cd "${BASH_SOURCE[0]%/*}/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
