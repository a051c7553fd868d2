#!/usr/bin/env bash
# The GPU check: one prepared run on an NVIDIA machine without network, under 8 minutes.
#
#   bash scripts/gpu-check.sh            # writes its log and reports into $OUT, or gpu-check/
#
# 1. reports nvidia-smi and the versions of torch, CUDA, TensorRT, cuda-python and ONNX Runtime
#    (and what is missing);
# 2. runs the GPU tests (pytest -m gpu);
# 3. times the PyTorch render at 1024x1536 on the GPU with bokeh-bench speed (fp32 eager, bf16
#    and fp16 autocast with channels_last, a CUDA-graph replay; random full-width weights) and
#    judges the 16-bit renders with bokeh-bench parity;
# 4. where TensorRT is importable: exports fp32 and fp16 ONNX, builds both engines with
#    bokeh-export engine, times them beside the PyTorch reference and judges their parity.
# Without an NVIDIA GPU it says so in one line and exits 2. Every step has a time limit inside
# one overall budget; a failed or skipped step is reported and the rest still run; the exit code
# is 1 when any step failed. PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "no NVIDIA GPU: nvidia-smi is not on this machine" >&2
  exit 2
fi
if ! gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1) || [ -z "$gpus" ]; then
  echo "no NVIDIA GPU: nvidia-smi lists none (${gpus//$'\n'/ })" >&2
  exit 2
fi

budget=${GPU_CHECK_SECONDS:-450}
deadline=$((SECONDS + budget))
out=${OUT:-gpu-check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Models, engines and caches go elsewhere: $OUT keeps the log and the reports (8 files).
work=$(mktemp -d)
log="$out/gpu-check.log"
: >"$log"
python=${PYTHON:-python3}
failed=()
export PYTHONUNBUFFERED=1

# This tree's toolkit, whatever else is installed: a folder of links maps the dbsi.* packages
# onto train/, export/, runtime/ and benchmarks/, first on the path (nothing is installed).
links="$work/links"
mkdir -p "$links/dbsi"
for package in train export runtime benchmarks; do
  ln -s "$PWD/$package" "$links/dbsi/$package"
done
export PYTHONPATH="$links:$PWD${PYTHONPATH:+:$PYTHONPATH}"
bench=("$python" -m dbsi.benchmarks.cli)
export_cli=("$python" -m dbsi.export.cli)

say() { printf '\n=== %s\n' "$*" | tee -a "$log"; }
# step NAME SECONDS COMMAND...: run with a time limit (cut to what the budget has left), log
# it, remember a failure; a step the budget cannot fit is skipped and counted as failed.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  say "$name"
  if [ "$limit" -lt 15 ]; then
    echo "--- $name: skipped, the time budget is spent" | tee -a "$log"
    failed+=("$name (no time left)")
    return
  fi
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  local code=${PIPESTATUS[0]}
  echo "--- $name: exit $code in $((SECONDS - started)) s" | tee -a "$log"
  [ "$code" -eq 0 ] || failed+=("$name (exit $code)")
}

say "machine"
timeout -k 5 20 nvidia-smi 2>&1 | tee -a "$log"
step "versions" 60 "$python" -c '
import importlib, platform
print(f"python {platform.python_version()}")
for name in ("torch", "tensorrt", "onnxruntime", "onnx", "onnxscript", "cv2"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name} MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"torch CUDA {torch.version.cuda}, available {cuda}, "
          f"device {torch.cuda.get_device_name() if cuda else None}")
except Exception as exc:
    print(f"torch CUDA MISSING ({exc})")
try:
    from cuda.bindings import runtime as cudart
    print(f"cuda-python: cudaGetDeviceCount {cudart.cudaGetDeviceCount()}, "
          f"driver {cudart.cudaDriverGetVersion()}, runtime {cudart.cudaRuntimeGetVersion()}")
except Exception as exc:
    print(f"cuda-python MISSING ({type(exc).__name__}: {exc})")
try:
    import onnxruntime
    print(f"onnxruntime providers {onnxruntime.get_available_providers()}")
except Exception:
    pass
'

step "GPU tests" 150 "$python" -m pytest -q -p no:cacheprovider -rs -m gpu tests

step "PyTorch render on the GPU, 1024x1536 (fp32, bf16/fp16 autocast + channels_last, CUDA graph)" \
  120 "${bench[@]}" speed --pytorch-only --size 1024x1536 --no-codec --repeats 20 --warmup 5 \
  --out "$out/speed-pytorch" --cache "$work/cache"
step "PyTorch 16-bit renders against fp32 on real photos" 60 "${bench[@]}" parity --pytorch-only \
  --out "$out/parity-pytorch" --cache "$work/cache"

if timeout -k 5 60 "$python" -c "import tensorrt" >/dev/null 2>&1; then
  checkpoint=$(timeout -k 5 60 "$python" -c "
from pathlib import Path
from dbsi.benchmarks.models import random_checkpoint
print(random_checkpoint(Path('$work/cache')))")
  # The engines are judged against PyTorch below: the exports skip their ONNX Runtime runs.
  step "export fp32 ONNX" 90 "${export_cli[@]}" onnx "$checkpoint" -o "$work/model.onnx" --skip-checks
  step "export fp16 ONNX" 90 "${export_cli[@]}" onnx "$checkpoint" -o "$work/model-fp16.onnx" \
    --fp16 --skip-checks
  for precision in fp32 fp16; do
    onnx="$work/model.onnx"
    [ "$precision" = fp16 ] && onnx="$work/model-fp16.onnx"
    step "TensorRT $precision engine" 240 "${export_cli[@]}" engine "$onnx" \
      -o "$work/model-$precision.engine" --opt-shape 1x1024x1536x3 --max-shape 1x1536x1536x3 \
      --timing-cache "$work/timing.cache"
  done
  step "TensorRT engines against PyTorch, 1024x1536" 120 "${bench[@]}" speed --model "$checkpoint" \
    --model "$work/model-fp32.engine" --model "$work/model-fp16.engine" --size 1024x1536 \
    --no-codec --repeats 20 --warmup 5 --out "$out/speed-tensorrt" --cache "$work/cache"
  step "TensorRT parity on real photos" 90 "${bench[@]}" parity --model "$checkpoint" \
    --model "$work/model-fp32.engine" --model "$work/model-fp16.engine" \
    --out "$out/parity-tensorrt" --cache "$work/cache"
else
  say "TensorRT is not importable here: no engines built (install the gpu extra)"
fi

say "summary"
if [ ${#failed[@]} -eq 0 ]; then
  echo "every step passed in $SECONDS s; reports and log in $out" | tee -a "$log"
  exit 0
fi
printf 'FAILED: %s\n' "${failed[@]}" | tee -a "$log"
exit 1
