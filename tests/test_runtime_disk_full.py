"""``bokeh-run`` writing to a disk that fills up (a real 2 MB tmpfs): each refused picture is
reported with the system's reason, no partial file is left, and after 3 refused writes in a
row the run stops with a one-line reason and exit 1 instead of rendering every picture left.
Skipped where a tmpfs cannot be mounted (not root, a container without CAP_SYS_ADMIN)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from tests.small_disk import small_disk

pytest.importorskip("torch", reason="the tiny model is exported from PyTorch")

from tests.test_runtime_cli import export_tiny_model, run_cli  # noqa: E402

SIZE = (480, 640)
COUNT = 40


def photo(seed: int) -> np.ndarray:
    """Gradients and noise: about 75 KB as the rendered JPEG, so 2 MB holds about 26."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float32)
    picture = np.dstack([x * 255 / SIZE[1], y * 255 / SIZE[0], (x + y) * 90 / sum(SIZE)])
    picture += rng.normal(0, 12, picture.shape).astype(np.float32)
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_a_full_disk_stops_the_run_with_one_line_and_leaves_only_whole_files(
    tmp_path_factory, tmp_path
):
    model = export_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model").path
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(COUNT):
        cv2.imwrite(str(inputs / f"p{i:02d}.jpg"), photo(i))
    with small_disk(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        code, output = run_cli(model, inputs, "--out", disk, "--backend", "onnxruntime")
        assert code == 1, output
        reason = f"bokeh-run: stopped: 3 writes in a row failed (no space left on device) on {disk}"
        assert reason in output.splitlines(), output
        failed = [line for line in output.splitlines() if line.startswith("FAILED")]
        assert len(failed) >= 3, output
        assert all(re.fullmatch(r"FAILED .*p\d\d\.jpg: no space left on device", f) for f in failed)
        done, failures, left = map(
            int, re.search(r"done (\d+), failed (\d+), skipped 0, left (\d+) in", output).groups()
        )
        assert failures == len(failed) and done >= 5
        assert left > 0 and done + failures + left == COUNT, "it stopped before the end"
        written = sorted(disk.iterdir())
        assert len(written) == done, "no partial or temporary file"
        for path in written:
            picture = cv2.imread(str(path))
            assert picture is not None and picture.shape == (*SIZE, 3), path.name
