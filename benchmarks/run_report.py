"""What every ``bokeh-bench`` command does around its own measurement: look at the machine,
open what ``--model`` names, stop with a one-line reason when nothing could be opened, fill in
the timing defaults, and show progress on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dbsi.benchmarks import machine as machine_info_module
from dbsi.benchmarks.candidates import ModelSet
from dbsi.benchmarks.models import resolve_models

# Fewer repeats on CPU so the default run (HD, full width, two backends) ends in minutes.
CPU_DEFAULTS = {"repeats": 3, "warmup": 1}
GPU_DEFAULTS = {"repeats": 30, "warmup": 5}


def look_at_machine() -> tuple[dict[str, Any], bool]:
    """(``machine_info()``, whether it has a GPU)."""
    machine = machine_info_module.machine_info()
    return machine, bool(machine["gpus"])


def timing_settings(repeats: int | None, warmup: int | None, gpu: bool) -> tuple[int, int]:
    """(repeats, warmup): the given ones, else the defaults of a CPU or GPU machine."""
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    return (
        repeats if repeats is not None else defaults["repeats"],
        warmup if warmup is not None else defaults["warmup"],
    )


def open_models(
    models: Iterable[Path], cache: Path, gpu: bool, log: Callable[[str], None], **kwargs: Any
) -> ModelSet:
    """``resolve_models`` with this machine's GPU and the command's log."""
    return resolve_models(tuple(models), cache, gpu_present=gpu, log=log, **kwargs)


def require_candidates(model_set: ModelSet) -> None:
    """ValueError (exit code 2 in the CLI) when no backend could be opened, with every reason."""
    if not model_set.candidates:
        raise ValueError(
            "no backend could be opened here: " + "; ".join(s["reason"] for s in model_set.skipped)
        )


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    """A progress bar on stderr (stdout carries the tables)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
