"""bokeh-export stopped by a signal or a full disk: one line, exit 143 (SIGTERM) or 1 (disk),
no partial file left, an earlier file under the output's name as it was; an engine and its
sidecar are replaced as a pair or not at all."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from dbsi.export.cli import main
from dbsi.export.engine import write_engine
from dbsi.export.interrupt import Interrupted, hold_signals, raise_on_signals
from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.sidecar import EngineSidecar, read_sidecar, sidecar_path
from tests.export_helpers import make_checkpoint
from tests.small_disk import fill, small_disk

EARLIER = b"earlier export"
# Only a guard against a hung child: the test waits for files, never for a time.
PATIENCE_S = 300


def test_sigterm_during_the_checks_exits_143_and_leaves_the_earlier_file(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "model.pt", width=0.125)
    output = tmp_path / "m.onnx"
    output.write_bytes(EARLIER)
    command = [sys.executable, "-m", "dbsi.export.cli", "onnx", str(checkpoint), "-o", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    # The graph is saved under a temporary name and checked there before it is renamed.
    deadline = time.monotonic() + PATIENCE_S
    while not [p for p in tmp_path.glob(".m.*.partial.onnx") if p.stat().st_size > 0]:
        assert process.poll() is None, f"ended before its checks: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no temporary ONNX appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=PATIENCE_S)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == f"error: {output}: not written: stopped by SIGTERM"
    assert output.read_bytes() == EARLIER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model.pt"]


def test_a_full_disk_fails_the_export_in_one_line_and_keeps_the_earlier_file(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "model.pt", width=0.125)
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        output = disk / "m.onnx"
        output.write_bytes(EARLIER)
        args = ["onnx", str(checkpoint), "-o", str(output), "--skip-checks"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: {output}: no space left on device"
        )
        assert output.read_bytes() == EARLIER
        assert [p.name for p in disk.iterdir()] == ["m.onnx"]


def sidecar_for(engine: bytes) -> EngineSidecar:
    metadata = GraphMetadata(
        config={"kernel_sizes": [25, 45, 75]},
        min_input_side=38,
        max_input_side=8192,
        outputs=["bokeh"],
        precision="fp32",
        checkpoint_sha256="0" * 64,
        toolkit_version="test",
    )
    profile = {"min": [1, 38, 38, 3], "opt": [1, 512, 512, 3], "max": [2, 1024, 1024, 3]}
    return EngineSidecar(
        "10.14.1", "test GPU", "9.0", profile, False, hashlib.sha256(engine).hexdigest(), metadata
    )


def test_an_engine_and_its_sidecar_land_together(tmp_path):
    engine = tmp_path / "m.engine"
    write_engine(engine, b"engine" * 100, sidecar_for(b"engine" * 100))
    assert read_sidecar(engine, engine.read_bytes()).gpu_name == "test GPU"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]


def test_a_sidecar_that_cannot_be_written_keeps_the_earlier_engine_and_sidecar(tmp_path):
    old, new = b"old engine", b"n" * 16 * 1024
    with small_disk(tmp_path / "disk", 128 * 1024) as disk:
        engine = disk / "m.engine"
        write_engine(engine, old, sidecar_for(old))
        earlier_sidecar = sidecar_path(engine).read_bytes()
        # Room for the new engine's temporary file (four pages), none for the sidecar's.
        fill(disk, len(new) + 2048)
        with pytest.raises(OSError) as err:
            write_engine(engine, new, sidecar_for(new))
        assert str(err.value.filename) == str(sidecar_path(engine))
        assert engine.read_bytes() == old
        assert sidecar_path(engine).read_bytes() == earlier_sidecar
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "m.engine", "m.engine.json"]


def test_a_signal_while_held_arrives_when_the_block_ends():
    finished = []
    with pytest.raises(Interrupted, match="SIGTERM"), raise_on_signals(), hold_signals():
        signal.raise_signal(signal.SIGTERM)
        finished.append("the rest of the block")
    assert finished == ["the rest of the block"]
