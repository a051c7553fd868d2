"""The batch pipeline (dbsi.runtime.pipeline) on its own: output planning, batching of
same-size pictures within the backend's limits, failures that do not stop the run, the
clean-up of a killed run's partial files, a stop signal in the middle of a run and a full disk
that stops it. The backend is a real one that returns its input, so every written pixel can
be checked against the decoded input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path, PurePath

import cv2
import numpy as np

from dbsi.runtime.backend import Backend, describe_shape_problem
from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.pipeline import (
    RunOptions,
    WriteFailures,
    disk_refusal,
    plan_jobs,
    remove_stale_partials,
    run_jobs,
)
from dbsi.runtime.sources import Source
from tests.small_disk import small_disk


class IdentityBackend(Backend):
    """Returns each batch as its bokeh; records the batch sizes it was given."""

    name = "identity"
    outputs = ["bokeh"]

    def __init__(self, min_batch: int = 1, max_batch: int = 8) -> None:
        self._min, self._max = min_batch, max_batch
        self.batches: list[int] = []
        self.metadata = GraphMetadata(
            config={"kernel_sizes": [5]},
            min_input_side=8,
            max_input_side=4096,
            outputs=["bokeh"],
            precision="fp32",
            checkpoint_sha256="0" * 64,
            toolkit_version="test",
        )

    @property
    def device(self) -> str:
        return "CPU"

    @property
    def min_batch(self) -> int:
        return self._min

    @property
    def max_batch(self) -> int:
        return self._max

    def accepts(self, shape):
        return describe_shape_problem(shape, (self._min, 8, 8), (self._max, 4096, 4096))

    def _run(self, batch, apertures, temporal):
        self.batches.append(len(batch))
        return {"bokeh": batch.copy()}

    def close(self) -> None:
        pass


def picture(path: Path, height: int, width: int, seed: int) -> Source:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return Source(path, PurePath(path.name))


def run(backend, sources, out, stop=None, **options):
    jobs, problems = plan_jobs(sources, out, "png", save_weights=False)
    assert problems == []
    reported = []
    options = RunOptions(progress=False, **options)
    summary = run_jobs(backend, jobs, options, reported.append, stop)
    return summary, reported


def test_same_size_pictures_share_batches_of_the_requested_size(tmp_path):
    sources = [picture(tmp_path / f"a{i}.png", 32, 48, i) for i in range(5)]
    sources += [picture(tmp_path / f"b{i}.png", 48, 32, 10 + i) for i in range(2)]
    backend = IdentityBackend()
    summary, _ = run(backend, sources, tmp_path / "out", batch=2)
    assert summary.done == 7 and summary.failed == 0
    assert sorted(backend.batches) == [1, 2, 2, 2]
    for source in sources:
        written = cv2.imread(str(tmp_path / "out" / source.relative))
        assert np.array_equal(written, cv2.imread(str(source.path)))


def test_a_short_group_is_padded_to_the_backends_minimum_batch(tmp_path):
    sources = [picture(tmp_path / f"a{i}.png", 32, 48, i) for i in range(3)]
    backend = IdentityBackend(min_batch=2, max_batch=2)
    summary, _ = run(backend, sources, tmp_path / "out", batch=2)
    assert summary.done == 3 and backend.batches == [2, 2]


def test_an_undecodable_picture_fails_alone_with_its_reason(tmp_path):
    sources = [picture(tmp_path / "good.png", 32, 48, 1)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    sources.append(Source(broken, PurePath("broken.png")))
    summary, reported = run(IdentityBackend(), sources, tmp_path / "out")
    assert (summary.done, summary.failed) == (1, 1)
    assert any("broken.png" in line and "not a decodable image" in line for line in reported)
    assert (tmp_path / "out" / "good.png").is_file()
    assert not (tmp_path / "out" / "broken.png").exists()


def test_outputs_mirror_the_tree_and_never_overwrite_an_input(tmp_path):
    nested = Source(tmp_path / "in" / "a" / "b.jpg", PurePath("a/b.jpg"))
    jobs, problems = plan_jobs([nested], tmp_path / "out", None, save_weights=True)
    assert jobs[0].output == tmp_path / "out" / "a" / "b.jpg"
    assert jobs[0].weights_output == tmp_path / "out" / "a" / "b.weights.png"
    same_folder = Source(tmp_path / "in" / "c.png", PurePath("c.png"))
    jobs, problems = plan_jobs([same_folder], tmp_path / "in", None, save_weights=False)
    assert jobs == [] and "is an input; refusing to overwrite it" in problems[0].reason


def test_a_killed_runs_partial_files_for_its_outputs_are_removed(tmp_path):
    source = Source(tmp_path / "in" / "b.png", PurePath("b.png"))
    jobs, _ = plan_jobs([source], tmp_path / "out", None, save_weights=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".b.abcd1234.partial.png").write_bytes(b"half a picture")
    (tmp_path / "out" / ".other.abcd1234.partial.png").write_bytes(b"another run's")
    assert remove_stale_partials(jobs) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".other.abcd1234.partial.png"]


class PreemptedBackend(IdentityBackend):
    """Sends its own process SIGTERM during its ``at``-th batch, as a scheduler would."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _run(self, batch, apertures, temporal):
        if len(self.batches) + 1 == self.at:
            signal.raise_signal(signal.SIGTERM)
        return super()._run(batch, apertures, temporal)


# In a process of its own: the signal must reach a main thread whose signal state no earlier
# test touched.
PREEMPTED = """
import signal, sys
from pathlib import Path
from dbsi.runtime.stop import StopSignals
from tests.test_runtime_pipeline import PreemptedBackend, picture, run

folder = Path(sys.argv[1])
sources = [picture(folder / f"a{i:02d}.png", 32, 48, i) for i in range(20)]
backend = PreemptedBackend(at=2)
with StopSignals(budget_s=60) as stop:
    summary, _ = run(backend, sources, folder / "out", stop, batch=2, workers=1)
print(stop.requested.name, backend.batches, summary.stopped)
print(summary.line())
"""


def test_a_stop_signal_finishes_the_batch_in_flight_and_takes_no_new_picture(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PREEMPTED, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    received, line = done.stdout.splitlines()
    # no batch after the one the signal came in; that one is written whole
    assert received == "SIGTERM [2, 2] SIGTERM received"
    assert line.startswith("done 4, failed 0, skipped 0, left 16 in "), line
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"a{i:02d}.png" for i in range(4)]
    for path in written:
        assert np.array_equal(cv2.imread(str(path)), cv2.imread(str(tmp_path / path.name)))


def disk_error(code: int) -> OSError:
    return OSError(code, os.strerror(code), "out/a.png")


def test_only_the_disk_refusing_writes_in_a_row_stops_a_run():
    failures = WriteFailures(limit=3)
    assert not failures.failed(disk_error(errno.ENOSPC))
    assert not failures.failed(disk_error(errno.ENOSPC))
    failures.succeeded()  # a write that worked: not a full disk after all
    assert not failures.failed(disk_error(errno.EIO))
    assert not failures.failed(disk_error(errno.EACCES)), "a per-file error does not count"
    assert not failures.failed(ValueError("cannot encode"))
    assert not failures.failed(disk_error(errno.EROFS))
    assert failures.failed(disk_error(errno.EDQUOT))
    assert (failures.in_a_row, failures.last) == (3, "disk quota exceeded")
    assert disk_refusal(disk_error(errno.ENOSPC)) == "no space left on device"
    assert disk_refusal(disk_error(errno.ENOENT)) is None


def test_a_full_disk_stops_the_run_after_three_refused_writes(tmp_path):
    # Noise does not compress: each PNG takes about 18 KB, so 256 KB holds about a dozen.
    sources = [picture(tmp_path / "in" / f"a{i:02d}.png", 64, 96, i) for i in range(60)]
    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        summary, reported = run(IdentityBackend(), sources, disk, out_dir=disk)
        failed = [line for line in reported if line.startswith("FAILED")]
        assert summary.stopped == (
            f"3 writes in a row failed (no space left on device) on {disk}"
        ), reported
        assert len(failed) == summary.failed >= 3
        assert all(line.endswith(".png: no space left on device") for line in failed), failed
        assert summary.done >= 5 and summary.left > 0
        assert summary.done + summary.failed + summary.left == len(sources)
        written = sorted(disk.iterdir())
        assert len(written) == summary.done, "no partial or temporary file"
        for path in written:
            assert np.array_equal(
                cv2.imread(str(path)), cv2.imread(str(tmp_path / "in" / path.name))
            )
