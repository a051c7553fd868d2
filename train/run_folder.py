"""The run folder (``--out``): its files, and the rules for reusing it.

::

    plan.json            the plan the folder was started with (a rerun must match it)
    split.json           the train/val stems used (a resumed run reuses it)
    phaseN/last.pt       resumable state: weights, config, optimiser, schedule, RNG, metrics
    phaseN/best.pt       the best weights by the phase's validation metric (what export reads)
    phaseN/metrics.jsonl one line per epoch
    phaseN/grids/epochEEE.png  input, output, ground truth and weight maps of a few val images
    phaseN/summary.json  written when the phase finishes; a finished phase is skipped next time

Under ``torchrun`` only rank 0 writes here (``writer``); every rank reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbsi.runtime.atomic import atomic_write_text
from dbsi.train.pairs import BadPairs, Pair, discover_pairs, split_document, split_pairs
from dbsi.train.phases import TrainingPlan


class RunDirError(ValueError):
    """The run folder's state does not allow what was asked (a usage error)."""


class RunFolder:
    """The files of one run; ``force`` starts over what is there instead of reusing it."""

    def __init__(self, root: Path, force: bool, writer: bool) -> None:
        self.root, self.force, self.writer = Path(root), force, writer

    def check_plan(self, plan: TrainingPlan) -> None:
        """A run folder belongs to one plan: a rerun with other settings is refused."""
        path = self.root / "plan.json"
        current = plan.to_dict()
        if path.exists() and not self.force:
            stored = json.loads(path.read_text())
            if stored != current:
                fields = sorted(k for k in current if stored.get(k) != current[k])
                raise RunDirError(
                    f"{path}: this run folder was started with other settings "
                    f"({', '.join(fields)} differ); use another --out, or --force to start over"
                )
        if self.writer:
            atomic_write_text(path, json.dumps(current, indent=2) + "\n")

    def load_split(
        self, data: Path, plan: TrainingPlan, split_file: Path | None, bad: BadPairs
    ) -> tuple[list[Pair], list[Pair], str]:
        """(train, val, how), by ``dbsi.train.data.split_pairs``: a resumed run reuses the
        folder's split.json unless ``split_file`` is given or the run is forced; the split used
        is recorded there."""
        pairs = discover_pairs(data, bad)
        stored = self.root / "split.json"
        if split_file is None and stored.exists() and not self.force:
            split_file = stored
        train, val, how = split_pairs(pairs, plan.seed, plan.val_fraction, split_file)
        if not train:
            raise RunDirError(f"{data}: no usable training pairs")
        if not val:
            raise RunDirError(f"{data}: no usable validation pairs")
        if self.writer:
            atomic_write_text(stored, json.dumps(split_document(train, val)) + "\n")
        return train, val, how

    def phase_files(self, phase_name: str) -> dict[str, Path]:
        folder = self.root / phase_name
        return {
            "folder": folder,
            "last": folder / "last.pt",
            "best": folder / "best.pt",
            "metrics": folder / "metrics.jsonl",
            "summary": folder / "summary.json",
        }

    def finished_summary(self, files: dict[str, Path]) -> dict[str, Any] | None:
        """The summary of a phase that finished before, or None (always None when forced)."""
        if files["summary"].exists() and not self.force:
            return json.loads(files["summary"].read_text())
        return None

    def clear_phase(self, files: dict[str, Path]) -> None:
        """``--force``: remove a phase's checkpoints and records so it starts over."""
        if self.force and self.writer:
            for key in ("last", "best", "summary", "metrics"):
                files[key].unlink(missing_ok=True)

    def check_unfinished(self, phase_name: str, files: dict[str, Path], resume: bool) -> None:
        """An unfinished phase is continued only when asked (``--resume``)."""
        if files["last"].exists() and not resume:
            raise RunDirError(
                f"{files['last']}: {phase_name} has an unfinished run; pass --resume to "
                f"continue it or --force to start it over"
            )
