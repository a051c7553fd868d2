"""One phase's loop: model, optimiser, data, epochs, validation and checkpoints.

On CUDA the forward runs under autocast in channels_last (see ``dbsi.train.distributed``);
only rank 0 validates, writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dbsi.runtime.atomic import atomic_write_text
from dbsi.train.checkpoint import read_checkpoint, save_checkpoint
from dbsi.train.data import EpochSampler, PairDataset, collate_pairs, random_flips, worker_context
from dbsi.train.losses import LOSSES
from dbsi.train.pairs import Pair
from dbsi.train.phases import Phase, json_ready, learning_rate
from dbsi.train.render import BokehRenderer
from dbsi.train.rng import capture_rng_state, restore_rng_state
from dbsi.train.run_context import RunContext
from dbsi.train.run_folder import RunDirError
from dbsi.train.stop import StopRequest, agreed
from dbsi.train.validation import Scores, evaluate, write_grid


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stopped, the last good checkpoint was kept."""


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
    stopped_by: str | None = None  # for a "stopped" phase: "SIGINT", "SIGTERM" or "max-steps"


class PhaseRun:
    """One phase: model, optimiser, data, and the epoch loop."""

    def __init__(
        self,
        context: RunContext,
        phase: Phase,
        files: dict[str, Path],
        train: list[Pair],
        val: list[Pair],
        offset: int,
        steps_per_epoch: int,
        total_steps: int,
    ) -> None:
        self.context, self.phase, self.files = context, phase, files
        self.plan, self.options, self.device = context.plan, context.options, context.device
        self.offset, self.steps_per_epoch, self.total_steps = offset, steps_per_epoch, total_steps
        self.loss_fn = LOSSES[phase.loss]
        torch.manual_seed(self.plan.seed)
        self.renderer = BokehRenderer(self.plan.render_config(phase)).to(self.device)
        if context.channels_last:
            self.renderer = self.renderer.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            self.renderer.predictor.parameters(), lr=self.plan.lr_start, betas=self.plan.betas
        )
        self.flips = torch.Generator().manual_seed(self.plan.seed)
        self.sampler = EpochSampler(
            len(train), self.plan.seed, context.dist.rank, context.dist.world
        )
        workers = self.options.workers
        loader_args: dict[str, Any] = {
            "num_workers": workers,
            "collate_fn": collate_pairs,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": False,
            "multiprocessing_context": worker_context() if workers else None,
        }
        self.train_loader = DataLoader(
            PairDataset(train, (phase.height, phase.width)),
            batch_size=phase.batch_size,
            sampler=self.sampler,
            **loader_args,
        )
        self.val_loader = DataLoader(PairDataset(val, None), batch_size=1, **loader_args)
        self.model: torch.nn.Module = self.renderer
        if context.dist.launched:
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
        if self.context.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.context.amp_dtype)

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
            if self.context.scaler is not None:
                state["grad_scaler"] = self.context.scaler.state_dict()
        return state

    def save(self, key: str) -> None:
        if self.context.dist.main:
            save_checkpoint(self.files[key], self.renderer, **self.training_state(key == "last"))

    def init_weights(self, previous_best: Path | None) -> None:
        if previous_best is not None and previous_best.exists():
            payload = read_checkpoint(previous_best)
            self.renderer.predictor.load_state_dict(payload["model"])
            self.context.say(f"{self.phase.name}: starting from {previous_best}")
        elif self.options.megadepth is not None:
            self.renderer.predictor.init_backbone(self.options.megadepth)
            self.context.say(f"{self.phase.name}: backbone from MegaDepth {self.options.megadepth}")
        else:
            self.context.say(
                f"{self.phase.name}: starting from random weights (seed {self.plan.seed})"
            )

    def resume(self) -> None:
        payload = read_checkpoint(self.files["last"])
        if payload.get("phase") != self.phase.name or "optimizer" not in payload:
            raise RunDirError(f"{self.files['last']}: not a resumable {self.phase.name} checkpoint")
        self.renderer.predictor.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        restore_rng_state(payload["rng"], {"flips": self.flips})
        if self.context.scaler is not None and "grad_scaler" in payload:
            self.context.scaler.load_state_dict(payload["grad_scaler"])
        self.step = int(payload["step"])
        metrics = payload["metrics"]
        self.history, self.best, self.identity = (
            metrics["history"], metrics["best"], metrics["identity"],
        )  # fmt: skip
        self.context.say(
            f"{self.phase.name}: resumed from {self.files['last']} at step {self.step}"
        )

    # ----- loop -----

    def run(self, previous_best: Path | None, stop: StopRequest) -> PhaseResult:
        """Train to the phase's end, or until ``stop`` (a signal, on any rank) or --max-steps
        ends it after a whole step with a resumable ``last.pt``."""
        if self.files["last"].exists():
            self.resume()
        else:
            self.init_weights(previous_best)
        started, images, train_seconds = time.perf_counter(), 0, 0.0
        stopped_by = None
        while self.phase_step < self.phase.epochs * self.steps_per_epoch and not stopped_by:
            epoch = self.phase_step // self.steps_per_epoch
            count, seconds, stopped_by = self.train_epoch(epoch, stop)
            images, train_seconds = images + count, train_seconds + seconds
            if self.phase_step % self.steps_per_epoch == 0:
                self.end_epoch(epoch, count / max(seconds, 1e-9))
            if stopped_by:
                self.save("last")
                self.context.say(
                    f"{self.phase.name}: stopped at step {self.step} ({stopped_by}); "
                    f"{self.files['last']} holds the state, continue with --resume"
                )
        self.context.dist.barrier()
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
        the signal's name or "max-steps"). The ranks sum their stop flags with the loss after
        every step, so all of them stop after the same step."""
        self.renderer.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.phase_step % self.steps_per_epoch,
            desc=f"{self.phase.name} epoch {epoch + 1}/{self.phase.epochs}",
            unit="step",
            disable=not (self.context.dist.main and self.options.progress),
            leave=False,
        )
        images, started = 0, time.perf_counter()
        for batch in self.batches(epoch):
            for stem, reason in batch.bad:
                self.context.bad.add(stem, reason)
            loss, count = self.train_step(batch)
            total_loss, total_count, *flags = self.context.dist.all_sum(
                [loss * count, float(count), *stop.flags()]
            )
            signum = agreed(flags)
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
            if signum is not None or at_limit:
                bar.close()
                reason = signum.name if signum is not None else "max-steps"
                return images, time.perf_counter() - started, reason
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
        memory = torch.channels_last if self.context.channels_last else torch.contiguous_format
        original = original.to(self.device, non_blocking=True).float().div(255)
        target = target.to(self.device, non_blocking=True).float().div(255)
        original = original.contiguous(memory_format=memory)
        with self.autocast():
            output, _ = self.model(original)
        loss = self.loss_fn(output.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        if self.context.scaler is not None:
            self.context.scaler.scale(loss).backward()
            self.context.scaler.step(self.optimizer)
            self.context.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), original.shape[0]

    def validate(self, identity: bool = False) -> tuple[Scores, list]:
        return evaluate(
            self.renderer,
            self.val_loader,
            self.device,
            self.context.bad,
            self.autocast(),
            examples=self.options.grid_examples,
            identity=identity,
        )

    def end_epoch(self, epoch: int, images_per_s: float) -> None:
        """Validate (rank 0), log, keep the best, write the resumable checkpoint."""
        if self.context.dist.main:
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
            self.context.say(
                f"{self.phase.name} epoch {epoch + 1}/{self.phase.epochs}: "
                f"val PSNR {scores.psnr:.2f} dB, SSIM {scores.ssim:.4f}, L1 {scores.l1:.4f} "
                f"({images_per_s:.1f} img/s)"
            )
            self.context.report_bad_pairs()
            self.save("last")
        self.context.dist.barrier()

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
        if self.context.dist.main:
            atomic_write_text(self.files["summary"], json.dumps(summary, indent=2) + "\n")
        best = self.best
        self.context.say(
            f"{self.phase.name} finished: best epoch {best.get('epoch')} "
            f"(val PSNR {best.get('val_psnr', float('nan')):.2f} dB, "
            f"SSIM {best.get('val_ssim', float('nan')):.4f}; identity baseline "
            f"{self.identity.get('val_psnr', float('nan')):.2f} dB / "
            f"{self.identity.get('val_ssim', float('nan')):.4f}), "
            f"{images_per_s:.1f} img/s, {seconds:.0f} s -> {self.files['best']}"
        )
