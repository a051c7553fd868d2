"""bokeh-bench soak: bokeh-run watched from outside over generated pictures."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dbsi.benchmarks.cli import main
from dbsi.benchmarks.soak import DISTINCT, WINDOW, window_rate, write_pictures


def test_pictures_repeat_a_few_generated_ones_under_new_names(tmp_path):
    write_pictures(tmp_path, DISTINCT + 2, 24, 32)
    files = sorted(tmp_path.iterdir())
    assert len(files) == DISTINCT + 2
    assert files[0].read_bytes() == files[DISTINCT].read_bytes() != files[1].read_bytes()


def test_window_rates_compare_the_first_and_the_last_thousand():
    times = [i * 0.01 for i in range(WINDOW)] + [10 + i * 0.02 for i in range(WINDOW)]
    assert window_rate(times, first=True) == pytest.approx((WINDOW - 1) / 9.99)
    assert window_rate(times, first=False) == pytest.approx((WINDOW - 1) / 19.98)
    assert window_rate(times[:-1], first=True) is None


@pytest.mark.slow
def test_a_short_soak_reports_what_bokeh_run_wrote_and_held(tmp_path):
    args = ["soak", "--count", "40", "--size", "48x64", "--backend", "onnxruntime"]
    args += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "out" / "soak.json").read_text())["rows"]
    assert row["exit_code"] == 0 and row["written"] == 40 and row["backend"] == "onnxruntime"
    assert row["peak_rss_bytes"] > 0 and row["max_open_fds"] >= row["open_fds_at_end"] > 0
    assert row["first_window_images_per_s"] is None  # fewer than two thousand pictures
