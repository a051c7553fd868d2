"""The training loop: phases in order, each from the previous phase's best checkpoint.

Run folder (``--out``)::

    plan.json            the plan the folder was started with (a rerun must match it)
    split.json           the train/val stems used (a resumed run reuses it)
    phaseN/last.pt       resumable state: weights, config, optimiser, schedule, RNG, metrics
    phaseN/best.pt       the best weights by the phase's validation metric (what export reads)
    phaseN/metrics.jsonl one line per epoch
    phaseN/grids/epochEEE.png  input, output, ground truth and weight maps of a few val images
    phaseN/summary.json  written when the phase finishes; a finished phase is skipped next time

On CUDA the forward runs under autocast (bf16 where supported, else fp16 with a grad scaler)
in channels_last. Under ``torchrun`` each process trains on its shard (DDP); only rank 0 writes
files, validates and shows progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dbsi.runtime.atomic import atomic_write_text
from dbsi.train.checkpoint import read_checkpoint, save_checkpoint
from dbsi.train.data import (
    BadPairs,
    EpochSampler,
    Pair,
    PairDataset,
    collate_pairs,
    discover_pairs,
    random_flips,
    split_document,
    split_pairs,
)
from dbsi.train.losses import LOSSES
from dbsi.train.phases import Phase, TrainingPlan, json_ready, learning_rate
from dbsi.train.render import BokehRenderer
from dbsi.train.rng import capture_rng_state, restore_rng_state
from dbsi.train.validation import Scores, evaluate, write_grid


class RunDirError(ValueError):
    """The run folder's state does not allow what was asked (a usage error)."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stopped, the last good checkpoint was kept."""


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
class PhaseResult:
    phase: str
    status: str  # "finished", "skipped" (finished before) or "stopped" (resumable)
    best: Path | None
    best_metrics: dict[str, Any]
    identity_metrics: dict[str, Any]
    steps: int
    seconds: float
    images_per_s: float
    stopped_by: str | None = None  # for a "stopped" phase: "signal" (Ctrl-C) or "max-steps"


@dataclasses.dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_type: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class StopRequest:
    """Ctrl-C sets a flag that the loop checks between steps, so the checkpoint it then
    writes holds a whole step; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __enter__(self) -> StopRequest:
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunDirError("--device cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def autocast_settings(device: torch.device, amp: bool | None) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None, False
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16, True
    return torch.bfloat16, False


class Trainer:
    """Runs a plan's phases into a run folder; see the module docstring for the files."""

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
        self.bad = BadPairs()

    # ----- run folder -----

    def say(self, message: str) -> None:
        if self.dist.main:
            self.log(message)

    def report_bad_pairs(self) -> None:
        line = self.bad.report_new()
        if line:
            self.say(line)

    def check_plan(self) -> None:
        """A run folder belongs to one plan: a rerun with other settings is refused."""
        path = self.out / "plan.json"
        current = self.plan.to_dict()
        if path.exists() and not self.options.force:
            stored = json.loads(path.read_text())
            if stored != current:
                fields = sorted(k for k in current if stored.get(k) != current[k])
                raise RunDirError(
                    f"{path}: this run folder was started with other settings "
                    f"({', '.join(fields)} differ); use another --out, or --force to start over"
                )
        if self.dist.main:
            atomic_write_text(path, json.dumps(current, indent=2) + "\n")

    def load_split(self) -> tuple[list[Pair], list[Pair]]:
        pairs = discover_pairs(self.options.data, self.bad)
        stored = self.out / "split.json"
        split_file = self.options.split_file
        if split_file is None and stored.exists() and not self.options.force:
            split_file = stored
        train, val, how = split_pairs(pairs, self.plan.seed, self.plan.val_fraction, split_file)
        if not train:
            raise RunDirError(f"{self.options.data}: no usable training pairs")
        if not val:
            raise RunDirError(f"{self.options.data}: no usable validation pairs")
        if self.dist.main:
            atomic_write_text(stored, json.dumps(split_document(train, val)) + "\n")
        self.say(f"data: {len(train)} training and {len(val)} validation pairs ({how})")
        self.report_bad_pairs()
        return train, val

    # ----- the run -----

    def steps_per_epoch(self, phase: Phase, train_size: int) -> int:
        per_rank = -(-train_size // self.dist.world)
        return -(-per_rank // phase.batch_size)

    def run(self, only: list[str] | None = None) -> list[PhaseResult]:
        """Train the plan's phases (or those named in ``only``), skipping finished ones."""
        for name in only or []:
            self.plan.phase(name)
        self.check_plan()
        train, val = self.load_split()
        spe = [self.steps_per_epoch(p, len(train)) for p in self.plan.phases]
        total = sum(n * p.epochs for n, p in zip(spe, self.plan.phases))
        results, offset = [], 0
        previous_best: Path | None = None
        for phase, steps in zip(self.plan.phases, spe):
            if only is None or phase.name in only:
                result = self.run_phase(phase, train, val, offset, steps, total, previous_best)
                results.append(result)
                if result.status == "stopped":
                    break
            offset += steps * phase.epochs
            previous_best = self.out / phase.name / "best.pt"
        return results

    def phase_files(self, phase: Phase) -> dict[str, Path]:
        folder = self.out / phase.name
        return {
            "folder": folder,
            "last": folder / "last.pt",
            "best": folder / "best.pt",
            "metrics": folder / "metrics.jsonl",
            "summary": folder / "summary.json",
        }

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
        files = self.phase_files(phase)
        if files["summary"].exists() and not self.options.force:
            summary = json.loads(files["summary"].read_text())
            self.say(f"{phase.name}: finished before ({files['summary']}), skipped")
            return PhaseResult(
                phase.name, "skipped", files["best"], summary["best"], summary["identity"],
                0, 0.0, 0.0,
            )  # fmt: skip
        if self.options.force and self.dist.main:
            for key in ("last", "best", "summary", "metrics"):
                files[key].unlink(missing_ok=True)
        self.dist.barrier()
        if files["last"].exists() and not self.options.resume:
            raise RunDirError(
                f"{files['last']}: {phase.name} has an unfinished run; pass --resume to "
                f"continue it or --force to start it over"
            )
        return PhaseRun(self, phase, files, train, val, offset, steps_per_epoch, total_steps).run(
            previous_best
        )


class PhaseRun:
    """One phase: model, optimiser, data, and the epoch loop."""

    def __init__(
        self,
        trainer: Trainer,
        phase: Phase,
        files: dict[str, Path],
        train: list[Pair],
        val: list[Pair],
        offset: int,
        steps_per_epoch: int,
        total_steps: int,
    ) -> None:
        self.t, self.phase, self.files = trainer, phase, files
        self.plan, self.options, self.device = trainer.plan, trainer.options, trainer.device
        self.offset, self.steps_per_epoch, self.total_steps = offset, steps_per_epoch, total_steps
        self.loss_fn = LOSSES[phase.loss]
        torch.manual_seed(self.plan.seed)
        self.renderer = BokehRenderer(self.plan.render_config(phase)).to(self.device)
        if trainer.channels_last:
            self.renderer = self.renderer.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            self.renderer.predictor.parameters(), lr=self.plan.lr_start, betas=self.plan.betas
        )
        self.flips = torch.Generator().manual_seed(self.plan.seed)
        self.sampler = EpochSampler(
            len(train), self.plan.seed, trainer.dist.rank, trainer.dist.world
        )
        workers = self.options.workers
        loader_args: dict[str, Any] = {
            "num_workers": workers,
            "collate_fn": collate_pairs,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": False,
        }
        self.train_loader = DataLoader(
            PairDataset(train, (phase.height, phase.width)),
            batch_size=phase.batch_size,
            sampler=self.sampler,
            **loader_args,
        )
        self.val_loader = DataLoader(PairDataset(val, None), batch_size=1, **loader_args)
        self.model: torch.nn.Module = self.renderer
        if trainer.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.renderer, device_ids=ids)
        self.step = offset  # global optimiser steps done
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.identity: dict[str, Any] = {}

    # ----- state -----

    @property
    def phase_step(self) -> int:
        return self.step - self.offset

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.t.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.t.amp_dtype)

    def training_state(self, full: bool) -> dict[str, Any]:
        state: dict[str, Any] = {
            "phase": self.phase.name,
            "epoch": self.phase_step // self.steps_per_epoch,
            "step": self.step,
            "phase_step": self.phase_step,
            "plan": self.plan.to_dict(),
            "metrics": {"history": self.history, "best": self.best, "identity": self.identity},
        }
        if full:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = {
                "kind": "exponential-per-step",
                "lr_start": self.plan.lr_start,
                "lr_end": self.plan.lr_end,
                "total_steps": self.total_steps,
                "step": self.step,
            }
            state["rng"] = capture_rng_state({"flips": self.flips})
            if self.t.scaler is not None:
                state["grad_scaler"] = self.t.scaler.state_dict()
        return state

    def save(self, key: str) -> None:
        if self.t.dist.main:
            save_checkpoint(self.files[key], self.renderer, **self.training_state(key == "last"))

    def init_weights(self, previous_best: Path | None) -> None:
        if previous_best is not None and previous_best.exists():
            payload = read_checkpoint(previous_best)
            self.renderer.predictor.load_state_dict(payload["model"])
            self.t.say(f"{self.phase.name}: starting from {previous_best}")
        elif self.options.megadepth is not None:
            self.renderer.predictor.init_backbone(self.options.megadepth)
            self.t.say(f"{self.phase.name}: backbone from MegaDepth {self.options.megadepth}")
        else:
            self.t.say(f"{self.phase.name}: starting from random weights (seed {self.plan.seed})")

    def resume(self) -> None:
        payload = read_checkpoint(self.files["last"])
        if payload.get("phase") != self.phase.name or "optimizer" not in payload:
            raise RunDirError(f"{self.files['last']}: not a resumable {self.phase.name} checkpoint")
        self.renderer.predictor.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        restore_rng_state(payload["rng"], {"flips": self.flips})
        if self.t.scaler is not None and "grad_scaler" in payload:
            self.t.scaler.load_state_dict(payload["grad_scaler"])
        self.step = int(payload["step"])
        metrics = payload["metrics"]
        self.history, self.best, self.identity = (
            metrics["history"], metrics["best"], metrics["identity"],
        )  # fmt: skip
        self.t.say(f"{self.phase.name}: resumed from {self.files['last']} at step {self.step}")

    # ----- loop -----

    def run(self, previous_best: Path | None) -> PhaseResult:
        if self.files["last"].exists():
            self.resume()
        else:
            self.init_weights(previous_best)
        started, images, train_seconds = time.perf_counter(), 0, 0.0
        stopped_by = None
        with StopRequest() as stop:
            while self.phase_step < self.phase.epochs * self.steps_per_epoch and not stopped_by:
                epoch = self.phase_step // self.steps_per_epoch
                count, seconds, stopped_by = self.train_epoch(epoch, stop)
                images, train_seconds = images + count, train_seconds + seconds
                if self.phase_step % self.steps_per_epoch == 0:
                    self.end_epoch(epoch, count / max(seconds, 1e-9))
                if stopped_by:
                    self.save("last")
                    self.t.say(
                        f"{self.phase.name}: stopped at step {self.step}; "
                        f"{self.files['last']} holds the state, continue with --resume"
                    )
        self.t.dist.barrier()
        rate = images / max(train_seconds, 1e-9)
        if not stopped_by:
            self.finish(time.perf_counter() - started, rate)
        return PhaseResult(
            self.phase.name,
            "stopped" if stopped_by else "finished",
            self.files["best"] if self.files["best"].exists() else None,
            self.best,
            self.identity,
            self.phase_step,
            time.perf_counter() - started,
            rate,
            stopped_by,
        )

    def batches(self, epoch: int) -> Iterator:
        start_batch = self.phase_step % self.steps_per_epoch
        self.sampler.set_epoch(epoch, start_batch * self.phase.batch_size)
        return iter(self.train_loader)

    def train_epoch(self, epoch: int, stop: StopRequest) -> tuple[int, float, str | None]:
        """Train to the end of the epoch (or a stop); (images, seconds, what stopped it: None,
        "signal" or "max-steps")."""
        self.renderer.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.phase_step % self.steps_per_epoch,
            desc=f"{self.phase.name} epoch {epoch + 1}/{self.phase.epochs}",
            unit="step",
            disable=not (self.t.dist.main and self.options.progress),
            leave=False,
        )
        images, started = 0, time.perf_counter()
        for batch in self.batches(epoch):
            for stem, reason in batch.bad:
                self.t.bad.add(stem, reason)
            loss, count = self.train_step(batch)
            total_loss, total_count, stops = self.t.dist.all_sum(
                [loss * count, float(count), float(stop.requested)]
            )
            mean_loss = total_loss / max(total_count, 1.0)
            if not math.isfinite(mean_loss):
                last = self.files["last"]
                kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint yet"
                raise TrainingDiverged(
                    f"{self.phase.name}: non-finite loss ({mean_loss}) at step {self.step} "
                    f"(epoch {epoch + 1}); stopped, {kept}"
                )
            images += int(total_count)
            rate = images / max(time.perf_counter() - started, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.1f}")
            at_limit = self.options.max_steps is not None and self.step >= self.options.max_steps
            if stops > 0 or at_limit:
                bar.close()
                return images, time.perf_counter() - started, "signal" if stops > 0 else "max-steps"
            every = self.options.save_every
            if every and self.step % every == 0 and self.phase_step % self.steps_per_epoch:
                self.save("last")
        bar.close()
        return images, time.perf_counter() - started, None

    def train_step(self, batch: Any) -> tuple[float, int]:
        """One optimiser step; (loss, images). A batch of only bad pairs counts as a step."""
        lr = learning_rate(self.plan, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.step += 1
        if batch.original is None:
            return 0.0, 0
        original, target = random_flips(batch.original, batch.bokeh, self.flips)
        memory = torch.channels_last if self.t.channels_last else torch.contiguous_format
        original = original.to(self.device, non_blocking=True).float().div(255)
        target = target.to(self.device, non_blocking=True).float().div(255)
        original = original.contiguous(memory_format=memory)
        with self.autocast():
            output, _ = self.model(original)
        loss = self.loss_fn(output.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        if self.t.scaler is not None:
            self.t.scaler.scale(loss).backward()
            self.t.scaler.step(self.optimizer)
            self.t.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), original.shape[0]

    def validate(self, identity: bool = False) -> tuple[Scores, list]:
        return evaluate(
            self.renderer,
            self.val_loader,
            self.device,
            self.t.bad,
            self.autocast(),
            examples=self.options.grid_examples,
            identity=identity,
        )

    def end_epoch(self, epoch: int, images_per_s: float) -> None:
        """Validate (rank 0), log, keep the best, write the resumable checkpoint."""
        if self.t.dist.main:
            if not self.identity:
                self.identity = self.validate(identity=True)[0].as_dict()
            scores, examples = self.validate()
            record = json_ready(
                {
                    "phase": self.phase.name,
                    "epoch": epoch + 1,
                    "step": self.step,
                    "lr": learning_rate(self.plan, self.step - 1, self.total_steps),
                    "images_per_s": images_per_s,
                    **scores.as_dict(),
                }
            )
            self.history.append(record)
            atomic_write_text(
                self.files["metrics"], "".join(json.dumps(r) + "\n" for r in self.history)
            )
            write_grid(self.files["folder"] / "grids" / f"epoch{epoch + 1:03d}.png", examples)
            metric = f"val_{self.phase.selection_metric}"
            if not self.best or record[metric] > self.best[metric]:
                self.best = record
                self.save("best")
            self.t.say(
                f"{self.phase.name} epoch {epoch + 1}/{self.phase.epochs}: "
                f"val PSNR {scores.psnr:.2f} dB, SSIM {scores.ssim:.4f}, L1 {scores.l1:.4f} "
                f"({images_per_s:.1f} img/s)"
            )
            self.t.report_bad_pairs()
            self.save("last")
        self.t.dist.barrier()

    def finish(self, seconds: float, images_per_s: float) -> None:
        summary = {
            "phase": self.phase.name,
            "epochs": self.phase.epochs,
            "steps": self.phase_step,
            "seconds_this_session": seconds,
            "images_per_s": images_per_s,
            "best": self.best,
            "identity": self.identity,
            "best_checkpoint": str(self.files["best"]),
        }
        if self.t.dist.main:
            atomic_write_text(self.files["summary"], json.dumps(summary, indent=2) + "\n")
        best = self.best
        self.t.say(
            f"{self.phase.name} finished: best epoch {best.get('epoch')} "
            f"(val PSNR {best.get('val_psnr', float('nan')):.2f} dB, "
            f"SSIM {best.get('val_ssim', float('nan')):.4f}; identity baseline "
            f"{self.identity.get('val_psnr', float('nan')):.2f} dB / "
            f"{self.identity.get('val_ssim', float('nan')):.4f}), "
            f"{images_per_s:.1f} img/s, {seconds:.0f} s -> {self.files['best']}"
        )
