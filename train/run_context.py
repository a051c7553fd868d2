"""What a phase's loop needs from the run around it: the plan and the options, where this
process trains (device, precision, its place in a DDP job), the record of bad pairs and the log.

The trainer builds one and hands it to each phase (``dbsi.train.loop``), so the loop never needs
the trainer itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from dbsi.train.distributed import Distributed, autocast_settings, pick_device
from dbsi.train.pairs import BadPairs
from dbsi.train.phases import TrainingPlan


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


@dataclasses.dataclass
class RunContext:
    plan: TrainingPlan
    options: RunOptions
    device: torch.device
    dist: Distributed
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    log: Callable[[str], None]
    bad: BadPairs = dataclasses.field(default_factory=BadPairs)

    @classmethod
    def start(
        cls, plan: TrainingPlan, options: RunOptions, log: Callable[[str], None]
    ) -> RunContext:
        """Pick the device, join the DDP job when under ``torchrun``, choose the precision."""
        device = pick_device(options.device)
        dist = Distributed.from_environment(device.type)
        if dist.launched and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        amp_dtype, needs_scaler = autocast_settings(device, options.amp)
        scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
        context = cls(plan, options, device, dist, amp_dtype, scaler, device.type == "cuda", log)
        if dist.launched:
            context.say(f"DDP: {dist.world} process(es), backend {dist.backend}")
        return context

    def say(self, message: str) -> None:
        """Log on rank 0 only."""
        if self.dist.main:
            self.log(message)

    def report_bad_pairs(self) -> None:
        line = self.bad.report_new()
        if line:
            self.say(line)
