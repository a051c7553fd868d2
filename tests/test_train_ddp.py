"""DDP under torchrun: two CPU processes (gloo) train one phase and rank 0 writes the files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dbsi.train.checkpoint import read_checkpoint
from dbsi.train.synthetic import SceneSpec, write_dataset


def torchrun_phase1(
    data: Path, out: Path, processes: int, device: str, size: str = "32x48"
) -> subprocess.CompletedProcess:
    """``bokeh-train run phase1`` of the tiny preset, one epoch of batch 4, under torchrun."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(processes), "-m", "dbsi.train.cli", "run", "phase1", "--preset", "tiny", "--data",
        str(data), "--out", str(out), "--sizes", size, "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--device", device, "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_with_two_processes_trains_shards_and_writes_a_checkpoint(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, 18, seed=2, spec=SceneSpec(height=48, width=64))
    out = tmp_path / "run"
    done = torchrun_phase1(data, out, 2, "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    payload = read_checkpoint(out / "phase1" / "best.pt")
    # 16 training pairs, 8 per rank, batch 4: 2 steps per epoch (4 on a single process).
    assert payload["step"] == 2
    assert (out / "phase1" / "summary.json").exists()
    assert done.stderr.count("phase1 finished") == 1  # only rank 0 reports
    assert "DDP: 2 process(es), backend gloo" in done.stderr
