#!/usr/bin/env bash
# Create .venv and install the toolkit with its CPU extras. Re-running does nothing unless
# setup.cfg or pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.dbsi-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "Setting up .venv (CPU torch 2.13.0, ONNX Runtime, OpenCV, test tools)..."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch is pinned in the 'train' extra: an unpinned torch resolves to a multi-GB CUDA build.
.venv/bin/pip install --quiet -e '.[train,cpu,dev]'
# lpips ships the LPIPS linear heads; its own imports need torchvision, which we do not use.
.venv/bin/pip install --quiet --no-deps 'lpips==0.1.4'
echo "$want" > "$stamp"
