"""The training run: phases in order, each from the previous phase's best checkpoint.

The rooms it uses: the run folder's files and reuse rules (``dbsi.train.run_folder``), the
device, precision and DDP set-up (``dbsi.train.distributed``), and one phase's loop
(``dbsi.train.loop``), which gets what it needs from the run through ``dbsi.train.run_context``
(the dependency goes one way). Under ``torchrun`` each process trains on its shard (DDP); only
rank 0 writes files, validates and shows progress.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dbsi.train.loop import PhaseResult, PhaseRun
from dbsi.train.pairs import Pair
from dbsi.train.phases import Phase, TrainingPlan
from dbsi.train.run_context import RunContext, RunOptions
from dbsi.train.run_folder import RunFolder
from dbsi.train.stop import StopRequest, agreed


class Trainer:
    """Runs a plan's phases into a run folder (see ``dbsi.train.run_folder`` for the files)."""

    def __init__(
        self,
        plan: TrainingPlan,
        options: RunOptions,
        log: Callable[[str], None] = print,
    ) -> None:
        self.plan, self.options = plan, options
        self.context = RunContext.start(plan, options, log)
        self.out = Path(options.out)
        self.folder = RunFolder(self.out, options.force, writer=self.context.dist.main)

    def load_split(self) -> tuple[list[Pair], list[Pair]]:
        train, val, how = self.folder.load_split(
            self.options.data, self.plan, self.options.split_file, self.context.bad
        )
        self.context.say(f"data: {len(train)} training and {len(val)} validation pairs ({how})")
        self.context.report_bad_pairs()
        return train, val

    def steps_per_epoch(self, phase: Phase, train_size: int) -> int:
        per_rank = -(-train_size // self.context.dist.world)
        return -(-per_rank // phase.batch_size)

    def run(self, only: list[str] | None = None) -> list[PhaseResult]:
        """Train the plan's phases (or those named in ``only``), skipping finished ones.

        SIGINT or SIGTERM stops the run after the current step (see ``dbsi.train.stop``); the
        stopped phase's result says which signal."""
        for name in only or []:
            self.plan.phase(name)
        # Installed for the whole run: a signal that lands while a phase validates its last
        # epoch, or between phases, stops the run before the next phase starts.
        with StopRequest() as stop:
            self.folder.check_plan(self.plan)
            train, val = self.load_split()
            steps_per_epoch = [self.steps_per_epoch(p, len(train)) for p in self.plan.phases]
            total = sum(n * p.epochs for n, p in zip(steps_per_epoch, self.plan.phases))
            results, offset = [], 0
            previous_best: Path | None = None
            for phase, steps in zip(self.plan.phases, steps_per_epoch):
                if only is None or phase.name in only:
                    result = self.run_phase(
                        phase, train, val, offset, steps, total, previous_best, stop
                    )
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
        stop: StopRequest,
    ) -> PhaseResult:
        files = self.folder.phase_files(phase.name)
        summary = self.folder.finished_summary(files)
        if summary is not None:
            self.context.say(f"{phase.name}: finished before ({files['summary']}), skipped")
            return PhaseResult(
                phase.name, "skipped", files["best"], summary["best"], summary["identity"],
                0, 0.0, 0.0,
            )  # fmt: skip
        # Every rank reaches this point; they stop here together or start the phase together.
        signum = agreed(self.context.dist.all_sum(stop.flags()))
        if signum is not None:
            self.context.say(
                f"{phase.name}: not started ({signum.name}); rerun the same command to continue"
            )
            return PhaseResult(
                phase.name, "stopped", None, {}, {}, 0, 0.0, 0.0, stopped_by=signum.name
            )
        self.folder.clear_phase(files)
        self.context.dist.barrier()
        self.folder.check_unfinished(phase.name, files, self.options.resume)
        run = PhaseRun(self.context, phase, files, train, val, offset, steps_per_epoch, total_steps)
        return run.run(previous_best, stop)
