#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/python -m pytest -q "$@"
