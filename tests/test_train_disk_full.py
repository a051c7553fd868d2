"""bokeh-train on a disk that fills up: one line naming the file, exit 1, and the last complete
checkpoint still there and loadable (every write is atomic)."""

from __future__ import annotations

from click.testing import CliRunner

from dbsi.train.checkpoint import read_checkpoint
from dbsi.train.cli import main
from dbsi.train.synthetic import SceneSpec, write_dataset
from tests.small_disk import small_disk

RUN = ["run", "phase1", "--preset", "tiny", "--sizes", "32x48", "--epochs", "2",
       "--batch-size", "4", "--workers", "0", "--no-progress", "--save-every", "1"]  # fmt: skip


def test_a_disk_too_small_for_the_next_checkpoint_stops_the_run_keeping_the_last(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, 20, seed=1, spec=SceneSpec(height=48, width=64))
    runner = CliRunner()
    measured = runner.invoke(
        main, [*RUN, "--data", str(data), "--out", str(tmp_path / "one"), "--max-steps", "1"]
    )
    assert measured.exit_code == 0, measured.output
    checkpoint_bytes = (tmp_path / "one" / "phase1" / "last.pt").stat().st_size
    # Room for the run folder's small files and one checkpoint, not for the temporary copy
    # the next checkpoint is written to before it replaces the first.
    with small_disk(tmp_path / "disk", checkpoint_bytes * 3 // 2) as out:
        args = [*RUN, "--data", str(data), "--out", str(out), "--max-steps", "3"]
        result = runner.invoke(main, args)
        last = out / "phase1" / "last.pt"
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: {last}: no space left on device; the files written before it are intact"
        )
        assert read_checkpoint(last)["step"] == 1
        assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]
