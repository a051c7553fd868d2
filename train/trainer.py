"""The training run: phases in order, each from the previous phase's best checkpoint.

The rooms it uses: the run folder's files and reuse rules (``dbsi.train.run_folder``), the
device, precision and DDP set-up (``dbsi.train.distributed``), and one phase's loop
(``dbsi.train.loop``). Under ``torchrun`` each process trains on its shard (DDP); only rank 0
writes files, validates and shows progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from dbsi.train.distributed import Distributed, autocast_settings, pick_device
from dbsi.train.loop import PhaseResult, PhaseRun
from dbsi.train.pairs import BadPairs, Pair
from dbsi.train.phases import Phase, TrainingPlan
from dbsi.train.run_folder import RunFolder


@dataclasses.dataclass
class RunOptions:
    data: Path
    out: Path
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA, off for CPU
    workers: int = 2
    split_file: Path | None = None
    megadepth: Path | None = None
    resume: bool = False
    force: bool = False
    max_steps: int | None = None  # stop resumably once the run reaches this global step
    save_every: int = 0  # steps between resumable checkpoints; 0 = at each epoch's end
    progress: bool = True
    grid_examples: int = 4


class Trainer:
    """Runs a plan's phases into a run folder (see ``dbsi.train.run_folder`` for the files)."""

    def __init__(
        self,
        plan: TrainingPlan,
        options: RunOptions,
        log: Callable[[str], None] = print,
    ) -> None:
        self.plan, self.options, self.log = plan, options, log
        self.device = pick_device(options.device)
        self.dist = Distributed.from_environment(self.device.type)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.amp_dtype, needs_scaler = autocast_settings(self.device, options.amp)
        self.scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
        self.channels_last = self.device.type == "cuda"
        self.out = Path(options.out)
        self.folder = RunFolder(self.out, options.force, writer=self.dist.main)
        self.bad = BadPairs()

    def say(self, message: str) -> None:
        if self.dist.main:
            self.log(message)

    def report_bad_pairs(self) -> None:
        line = self.bad.report_new()
        if line:
            self.say(line)

    def load_split(self) -> tuple[list[Pair], list[Pair]]:
        train, val, how = self.folder.load_split(
            self.options.data, self.plan, self.options.split_file, self.bad
        )
        self.say(f"data: {len(train)} training and {len(val)} validation pairs ({how})")
        self.report_bad_pairs()
        return train, val

    def steps_per_epoch(self, phase: Phase, train_size: int) -> int:
        per_rank = -(-train_size // self.dist.world)
        return -(-per_rank // phase.batch_size)

    def run(self, only: list[str] | None = None) -> list[PhaseResult]:
        """Train the plan's phases (or those named in ``only``), skipping finished ones."""
        for name in only or []:
            self.plan.phase(name)
        self.folder.check_plan(self.plan)
        train, val = self.load_split()
        steps_per_epoch = [self.steps_per_epoch(p, len(train)) for p in self.plan.phases]
        total = sum(n * p.epochs for n, p in zip(steps_per_epoch, self.plan.phases))
        results, offset = [], 0
        previous_best: Path | None = None
        for phase, steps in zip(self.plan.phases, steps_per_epoch):
            if only is None or phase.name in only:
                result = self.run_phase(phase, train, val, offset, steps, total, previous_best)
                results.append(result)
                if result.status == "stopped":
                    break
            offset += steps * phase.epochs
            previous_best = self.out / phase.name / "best.pt"
        return results

    def run_phase(
        self,
        phase: Phase,
        train: list[Pair],
        val: list[Pair],
        offset: int,
        steps_per_epoch: int,
        total_steps: int,
        previous_best: Path | None,
    ) -> PhaseResult:
        files = self.folder.phase_files(phase.name)
        summary = self.folder.finished_summary(files)
        if summary is not None:
            self.say(f"{phase.name}: finished before ({files['summary']}), skipped")
            return PhaseResult(
                phase.name, "skipped", files["best"], summary["best"], summary["identity"],
                0, 0.0, 0.0,
            )  # fmt: skip
        self.folder.clear_phase(files)
        self.dist.barrier()
        self.folder.check_unfinished(phase.name, files, self.options.resume)
        return PhaseRun(self, phase, files, train, val, offset, steps_per_epoch, total_steps).run(
            previous_best
        )
