"""The training loop: exact resume, divergence handling, run-folder rules, checkpoint contents."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from click.testing import CliRunner

from dbsi.train.checkpoint import load_renderer, read_checkpoint
from dbsi.train.cli import main
from dbsi.train.loop import PhaseRun, TrainingDiverged
from dbsi.train.phases import TINY, with_overrides
from dbsi.train.run_context import RunOptions
from dbsi.train.run_folder import RunDirError
from dbsi.train.synthetic import SceneSpec, write_dataset
from dbsi.train.trainer import Trainer

# One phase of 2 epochs, 5 steps each (18 training pairs, batch 4).
PLAN = with_overrides(TINY, sizes="32x48", epochs="2", batch_size="4")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, 20, seed=1, spec=SceneSpec(height=48, width=64))
    return root


def train(plan, data, out, only=("phase1",), **options):
    options = RunOptions(data, out, workers=0, progress=False, **options)
    return Trainer(plan, options, log=lambda _: None).run(list(only))


def test_resume_continues_exactly(data, tmp_path):
    train(PLAN, data, tmp_path / "straight")
    first = train(PLAN, data, tmp_path / "split", max_steps=7)
    assert first[0].status == "stopped"
    assert read_checkpoint(tmp_path / "split" / "phase1" / "last.pt")["step"] == 7
    train(PLAN, data, tmp_path / "split", resume=True)
    a = read_checkpoint(tmp_path / "straight" / "phase1" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "phase1" / "last.pt")
    assert a["step"] == b["step"] == 10
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6, rtol=0), key


def test_checkpoint_carries_the_phase_config_and_loads_for_export(data, tmp_path):
    train(PLAN, data, tmp_path)
    payload = read_checkpoint(tmp_path / "phase1" / "best.pt")
    assert payload["config"]["net_long_side"] == 48
    assert payload["config"]["kernel_sizes"] == list(TINY.kernel_sizes)
    renderer = load_renderer(tmp_path / "phase1" / "best.pt")
    assert not renderer.training
    lines = (tmp_path / "phase1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (tmp_path / "phase1" / "grids" / "epoch002.png").stat().st_size > 0


def test_a_finished_phase_is_skipped_and_other_settings_are_refused(data, tmp_path):
    train(PLAN, data, tmp_path)
    again = train(PLAN, data, tmp_path)
    assert again[0].status == "skipped"
    with pytest.raises(RunDirError, match="other settings"):
        train(with_overrides(PLAN, width=0.25), data, tmp_path)


def test_an_unfinished_phase_needs_resume_or_force(data, tmp_path):
    train(PLAN, data, tmp_path, max_steps=3)
    with pytest.raises(RunDirError, match="--resume"):
        train(PLAN, data, tmp_path)


def test_a_non_finite_loss_stops_the_run_naming_the_step(data, tmp_path):
    plan = with_overrides(PLAN, lr_start=1e30, lr_end=1e29)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss .* at step 2 .*last good") as err:
        train(plan, data, tmp_path, save_every=1)
    assert str(tmp_path / "phase1" / "last.pt") in str(err.value)
    assert read_checkpoint(tmp_path / "phase1" / "last.pt")["step"] == 1


def interrupt_at_step(monkeypatch, step):
    """Deliver a real SIGINT to this process once training reaches ``step``."""
    original = PhaseRun.train_step

    def train_step(self, batch):
        if self.step + 1 == step:
            signal.raise_signal(signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(PhaseRun, "train_step", train_step)


CLI_RUN = ["run", "phase1", "--preset", "tiny", "--sizes", "32x48", "--epochs", "2",
           "--batch-size", "4", "--workers", "0", "--no-progress"]  # fmt: skip


def test_ctrl_c_exits_130_even_with_max_steps(data, tmp_path, monkeypatch):
    interrupt_at_step(monkeypatch, 2)
    args = [*CLI_RUN, "--data", str(data), "--out", str(tmp_path), "--max-steps", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert read_checkpoint(tmp_path / "phase1" / "last.pt")["step"] == 2


def test_reaching_max_steps_exits_0(data, tmp_path):
    args = [*CLI_RUN, "--data", str(data), "--out", str(tmp_path), "--max-steps", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "phase1" / "last.pt")["step"] == 3
