"""bokeh-bench training on the CPU: the real trainer, a warm-up session, a measured one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dbsi.benchmarks.cli import main
from dbsi.benchmarks.training import DISTINCT_SCENES, write_training_pairs
from dbsi.train.pairs import BadPairs, discover_pairs


def test_training_pairs_repeat_a_few_rendered_scenes_to_fill_the_set(tmp_path):
    write_training_pairs(tmp_path, DISTINCT_SCENES + 3, 32, 48)
    originals = sorted((tmp_path / "original").iterdir(), key=lambda p: int(p.stem))
    assert len(originals) == DISTINCT_SCENES + 3
    assert originals[0].read_bytes() == originals[DISTINCT_SCENES].read_bytes()
    assert originals[0].read_bytes() != originals[1].read_bytes()
    assert len(discover_pairs(tmp_path, BadPairs())) == DISTINCT_SCENES + 3


@pytest.mark.slow
def test_the_measured_session_trains_the_asked_steps_after_the_warm_up(tmp_path):
    args = ["training", "--size", "32x48", "--batch", "2", "--steps", "2", "--warmup-steps", "1"]
    args += ["--preset", "tiny", "--workers", "0", "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "training.json").read_text())["rows"]
    assert row["steps"] == 2 and row["warmup_steps"] == 1 and row["batch"] == 2
    assert row["images_per_s"] > 0 and row["peak_gpu_memory_bytes"] is None
    assert row["precision"] == "fp32" and row["layout"] == "contiguous"
