#!/usr/bin/env bash
# Command one: the whole pipeline on an embedded default, CPU only, into demo/.
# Generates a synthetic depth-of-field set, trains the tiny preset through all three phases,
# exports and checks the ONNX (fullres render mode), renders scikit-image's real photos with
# bokeh-run (with weight-map pictures), prints bokeh-bench tables and draws demo/contact-sheet.png;
# then renders synthetic clips with and without temporal smoothing and scores them against their
# true defocused clips (demo/video-strip.png).
# Every step skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"
step() { printf '\n=== %s\n' "$*"; }

step "1/7 synthetic depth-of-field set (demo/data)"
bokeh-train synth --out demo/data --count 64 --seed 0

step "2/7 train the tiny preset, phases 1-3 (demo/run)"
bokeh-train run --preset tiny --data demo/data --out demo/run
ckpt=demo/run/phase3/best.pt

step "3/7 export and check the ONNX in fullres mode (demo/model.onnx)"
# fullres blends the weights at the photo's own size, so real photos larger than the network
# (long side 64) keep their detail; paper mode would blow up a 64-pixel render.
onnx_mode() { bokeh-export info demo/model.onnx 2>/dev/null | sed -n 's/.*"mode": "\([a-z]*\)".*/\1/p'; }
if [ ! -f demo/model.onnx ] || [ "$ckpt" -nt demo/model.onnx ] || [ "$(onnx_mode)" != fullres ]; then
  bokeh-export onnx "$ckpt" -o demo/model.onnx --with-weights --mode fullres
  rm -rf demo/rendered  # renders of an earlier export
else
  echo "demo/model.onnx is up to date"
fi

step "4/7 render real photos (demo/rendered, weight maps as *.weights.png)"
python scripts/demo_photos.py demo/photos
bokeh-run demo/model.onnx demo/photos --out demo/rendered --save-weights --skip-existing

step "5/7 quality on a held-out synthetic set (seed 1): model in both modes vs identity and global blur; contact sheet (demo/contact-sheet.png)"
bokeh-train synth --out demo/heldout --count 64 --seed 1
bokeh-bench quality demo/heldout --model "$ckpt" --out demo/bench \
  --sheet demo/contact-sheet.png --sheet-photos demo/photos

step "6/7 speed: PyTorch eager vs ONNX Runtime and OpenVINO at 512x768"
bokeh-bench speed --model "$ckpt" --model demo/model.onnx --size 512x768 --out demo/bench

step "7/7 video: synthetic clips (demo/clips) rendered frame by frame and smoothed over time"
bokeh-train synth --video --out demo/clips --count 4 --seed 0
bokeh-bench video demo/clips --model demo/model.onnx --temporal 0 --temporal 0.6 \
  --out demo/bench --strip demo/video-strip.png
# One clip both ways (static camera, with its sound): demo/video/{independent,smoothed}/0.mkv
for strength in 0 0.6; do
  folder=$([ "$strength" = 0 ] && echo independent || echo smoothed)
  bokeh-run demo/model.onnx demo/clips/original/0.mkv --out "demo/video/$folder" \
    --temporal "$strength" --skip-existing
done

printf '\nDone. Open demo/contact-sheet.png first, then demo/rendered/ (bokeh photos and weight\n'
printf 'maps), demo/video-strip.png and demo/video/ (clips), and demo/bench/ (reports).\n'
