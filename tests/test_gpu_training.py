"""Training on a CUDA device: bf16 autocast with channels_last, resuming, and DDP over NCCL
in a one-process torchrun job (the code path of a multi-GPU job). Each test skips with
"no CUDA device" where torch sees none."""

from __future__ import annotations

import torch

from dbsi.train.checkpoint import read_checkpoint
from dbsi.train.run_context import RunOptions
from dbsi.train.trainer import Trainer
from tests.needs import needs_cuda
from tests.test_train_ddp import torchrun_phase1
from tests.test_train_loop import PLAN, train
from tests.test_train_loop import data as data  # noqa: F401 - the same synthetic pairs


def weights(out) -> dict[str, torch.Tensor]:
    return read_checkpoint(out / "phase1" / "last.pt")["model"]


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@needs_cuda
def test_training_on_cuda_runs_in_bf16_autocast_with_channels_last(data, tmp_path):
    options = RunOptions(
        data, tmp_path / "run", device="cuda", workers=0, progress=False, max_steps=3
    )
    trainer = Trainer(PLAN, options, log=lambda _: None)
    assert trainer.context.amp_dtype == torch.bfloat16 and trainer.context.scaler is None
    assert trainer.context.channels_last
    result = trainer.run(["phase1"])[0]
    assert result.status == "stopped" and result.steps == 3
    assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / "run").values())


@needs_cuda
def test_resuming_on_cuda_stays_within_cudas_own_run_to_run_spread(data, tmp_path):
    """CUDA training is not bit-reproducible: cuDNN's weight-gradient kernels sum with atomics
    in whatever order the threads finish, and bf16 autocast rounds those sums, so two identical
    uninterrupted runs already differ. A resumed run is exact in what it restores (weights,
    Adam moments, schedule, RNG, data order: the CPU test holds it to 1e-6), so it may differ
    from an uninterrupted run by no more than two uninterrupted runs differ from each other:
    the bound is ten times that measured spread, plus 1e-5 for a spread of zero. A restore bug
    (lost optimiser state, a repeated or skipped batch) moves weights by the learning rate,
    1e-3, far beyond it."""
    train(PLAN, data, tmp_path / "a", device="cuda")
    train(PLAN, data, tmp_path / "b", device="cuda")
    first = train(PLAN, data, tmp_path / "split", device="cuda", max_steps=7)[0]
    assert first.status == "stopped"
    train(PLAN, data, tmp_path / "split", device="cuda", resume=True)
    spread = largest_difference(weights(tmp_path / "a"), weights(tmp_path / "b"))
    gap = largest_difference(weights(tmp_path / "a"), weights(tmp_path / "split"))
    assert gap <= 10 * spread + 1e-5, (gap, spread)


@needs_cuda
def test_a_one_process_torchrun_job_trains_under_ddp_with_nccl(data, tmp_path):
    done = torchrun_phase1(data, tmp_path / "ddp", 1, "cuda")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DDP: 1 process(es), backend nccl" in done.stderr
    # 18 training pairs (20 less a seeded 10%), batch 4: 5 steps in the epoch.
    assert read_checkpoint(tmp_path / "ddp" / "phase1" / "best.pt")["step"] == 5
