"""Done-when: the tiny model, trained through all three phases (shortened) on a generated set,
beats doing nothing and the best global Gaussian blur on validation L1."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from click.testing import CliRunner

from dbsi.train.checkpoint import load_renderer
from dbsi.train.cli import main


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


def test_tiny_model_beats_identity_and_global_blur(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    runner = CliRunner()
    made = runner.invoke(main, ["synth", "--out", str(data), "--count", "64", "--seed", "0"])
    assert made.exit_code == 0, made.output
    args = ["run", "--preset", "tiny", "--data", str(data), "--out", str(run),
            "--epochs", "6,2,1", "--workers", "1", "--no-progress"]  # fmt: skip
    trained = runner.invoke(main, args)
    assert trained.exit_code == 0, trained.output
    assert "phase3: finished" in trained.output

    renderer = load_renderer(run / "phase3" / "best.pt")
    val = json.loads((run / "split.json").read_text())["val"]
    model, identity, blurs = [], [], {k: [] for k in range(3, 77, 2)}
    for stem in val:
        original = cv2.imread(str(data / "original" / f"{stem}.jpg"))
        target = cv2.imread(str(data / "bokeh" / f"{stem}.jpg"))
        rgb = torch.from_numpy(original[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out = renderer(rgb)[0][0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        model.append(l1(out.numpy()[..., ::-1], target))
        identity.append(l1(original, target))
        for k in blurs:
            blurs[k].append(l1(cv2.GaussianBlur(original, (k, k), 0), target))
    best_blur = min(np.mean(v) for v in blurs.values())
    print(f"val L1: model {np.mean(model):.5f}, identity {np.mean(identity):.5f}, "
          f"best global blur {best_blur:.5f}")  # fmt: skip
    assert np.mean(model) < np.mean(identity)
    assert np.mean(model) < best_blur

    rerun = runner.invoke(main, args)
    assert rerun.exit_code == 0 and rerun.output.count("finished before") == 3
