#!/usr/bin/env bash
# Command one: the whole pipeline on an embedded default, CPU only, into demo/.
# Generates a synthetic depth-of-field set, trains the tiny preset through all three phases,
# exports and checks the ONNX (fullres render mode), renders scikit-image's real photos with
# bokeh-run (with weight-map pictures), prints bokeh-bench tables and draws demo/contact-sheet.png.
# Every step skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"
step() { printf '\n=== %s\n' "$*"; }

step "1/6 synthetic depth-of-field set (demo/data)"
bokeh-train synth --out demo/data --count 64 --seed 0

step "2/6 train the tiny preset, phases 1-3 (demo/run)"
bokeh-train run --preset tiny --data demo/data --out demo/run
ckpt=demo/run/phase3/best.pt

step "3/6 export and check the ONNX in fullres mode (demo/model.onnx)"
# fullres blends the weights at the photo's own size, so real photos larger than the network
# (long side 64) keep their detail; paper mode would blow up a 64-pixel render.
onnx_mode() { bokeh-export info demo/model.onnx 2>/dev/null | sed -n 's/.*"mode": "\([a-z]*\)".*/\1/p'; }
if [ ! -f demo/model.onnx ] || [ "$ckpt" -nt demo/model.onnx ] || [ "$(onnx_mode)" != fullres ]; then
  bokeh-export onnx "$ckpt" -o demo/model.onnx --with-weights --mode fullres
  rm -rf demo/rendered  # renders of an earlier export
else
  echo "demo/model.onnx is up to date"
fi

step "4/6 render real photos (demo/rendered, weight maps as *.weights.png)"
python scripts/demo_photos.py demo/photos
bokeh-run demo/model.onnx demo/photos --out demo/rendered --save-weights --skip-existing

step "5/6 quality on a held-out synthetic set (seed 1): model in both modes vs identity and global blur; contact sheet (demo/contact-sheet.png)"
bokeh-train synth --out demo/heldout --count 64 --seed 1
bokeh-bench quality demo/heldout --model "$ckpt" --out demo/bench \
  --sheet demo/contact-sheet.png --sheet-photos demo/photos

step "6/6 speed: PyTorch eager vs ONNX Runtime and OpenVINO at 512x768"
bokeh-bench speed --model "$ckpt" --model demo/model.onnx --size 512x768 --out demo/bench

printf '\nDone. Open demo/contact-sheet.png first, then demo/rendered/ (bokeh photos and weight\n'
printf 'maps) and demo/bench/ (reports).\n'
