#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
# One worker per core (at most 4: each holds its own torch and exports), and each test file
# on one worker so that the file's session-scoped exports are made once.
.venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile "$@"
