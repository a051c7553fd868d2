"""The synthetic depth-of-field set: deterministic by seed, in the layout the loader reads,
and a real depth-of-field effect (in-focus subject kept, background blurred)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dbsi.train.cli import main
from dbsi.train.pairs import BadPairs, discover_pairs
from dbsi.train.synthetic import SceneSpec, is_generated, render_scene, write_dataset

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


def synth(out, count, *extra):
    args = ["synth", "--out", str(out), "--count", str(count), "--height", "32", "--width", "48"]
    return CliRunner().invoke(main, [*args, *extra])


def test_regenerating_with_a_smaller_count_removes_the_stale_scenes(tmp_path):
    assert synth(tmp_path, 4).exit_code == 0
    (tmp_path / "original" / "notes.txt").write_text("not the generator's")
    result = synth(tmp_path, 2)
    assert result.exit_code == 0, result.output
    assert "removed 6 files" in result.output
    for folder, ext in (("original", ".jpg"), ("bokeh", ".jpg"), ("depth", ".png")):
        assert sorted(p.name for p in (tmp_path / folder).glob(f"*{ext}")) == [f"0{ext}", f"1{ext}"]
    assert (tmp_path / "original" / "notes.txt").exists()
    assert [p.stem for p in discover_pairs(tmp_path, BadPairs())] == ["0", "1"]
    assert json.loads((tmp_path / "dataset.json").read_text())["count"] == 2


def test_regenerating_at_another_size_rewrites_every_scene(tmp_path):
    assert synth(tmp_path, 2).exit_code == 0
    result = synth(tmp_path, 2, "--height", "16", "--width", "16")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "original" / "1.jpg")).shape == (16, 16, 3)
    assert json.loads((tmp_path / "dataset.json").read_text())["spec"]["height"] == 16


def test_a_folder_with_foreign_images_is_refused_without_force(tmp_path):
    (tmp_path / "original").mkdir()
    cv2.imwrite(str(tmp_path / "original" / "7.jpg"), np.zeros((8, 8, 3), np.uint8))
    refused = synth(tmp_path, 2)
    assert refused.exit_code == 2 and "pass --force" in refused.output
    assert "7.jpg" in refused.output
    assert (tmp_path / "original" / "7.jpg").exists()
    forced = synth(tmp_path, 2, "--force")
    assert forced.exit_code == 0, forced.output
    assert not (tmp_path / "original" / "7.jpg").exists()


def test_an_interrupted_set_is_regenerated_without_force(tmp_path):
    def interrupt(i):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, 4, seed=0, spec=SceneSpec(height=32, width=48), on_scene=interrupt)
    assert not is_generated(tmp_path, 4, seed=0, spec=SceneSpec(height=32, width=48))
    result = synth(tmp_path, 1)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "bokeh" / "1.jpg").exists()
