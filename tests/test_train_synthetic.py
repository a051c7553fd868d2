"""The synthetic depth-of-field set: deterministic by seed, in the layout the loader reads,
and a real depth-of-field effect (in-focus subject kept, background blurred)."""

from __future__ import annotations

import json

import cv2
import numpy as np
from click.testing import CliRunner

from dbsi.train.cli import main
from dbsi.train.data import BadPairs, discover_pairs
from dbsi.train.synthetic import SceneSpec, render_scene, write_dataset

SPEC = SceneSpec(height=48, width=64)


def test_same_seed_gives_the_same_files_whatever_the_count(tmp_path):
    write_dataset(tmp_path / "a", 3, seed=7, spec=SPEC)
    write_dataset(tmp_path / "b", 5, seed=7, spec=SPEC)
    for i in range(3):
        for name in (f"original/{i}.jpg", f"bokeh/{i}.jpg", f"depth/{i}.png"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_another_seed_gives_other_scenes():
    assert not np.array_equal(render_scene(1, 0, SPEC).original, render_scene(2, 0, SPEC).original)


def test_the_set_is_in_the_layout_the_loader_reads(tmp_path):
    write_dataset(tmp_path, 4, seed=0, spec=SPEC)
    pairs = discover_pairs(tmp_path, BadPairs())
    assert [p.stem for p in pairs] == ["0", "1", "2", "3"]
    depth = cv2.imread(str(tmp_path / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (48, 64)
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    assert manifest["count"] == 4 and manifest["seed"] == 0


def test_the_focused_subject_stays_sharp_and_the_background_blurs():
    scene = render_scene(0, 3, SceneSpec())
    focus = scene.depth_mm == scene.depth_mm.min()
    background = scene.depth_mm == scene.depth_mm.max()
    inner = cv2.erode(focus.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    diff = np.abs(scene.original.astype(int) - scene.bokeh.astype(int)).mean(axis=2)
    assert inner.sum() > 20 and diff[inner].mean() < 2.0
    assert diff[background].mean() > 3 * diff[inner].mean()


def test_synth_command_skips_a_set_that_is_already_there(tmp_path):
    args = ["synth", "--out", str(tmp_path), "--count", "2", "--height", "32", "--width", "48"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "nothing to do" in second.output
