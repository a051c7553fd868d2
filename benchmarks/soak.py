"""``bokeh-bench soak``: ``bokeh-run`` over many small pictures, watched from outside.

A long batch job fails in ways a short one does not: memory that grows with every picture,
file descriptors that are never closed, throughput that sinks as the output folder fills. So
this runs the real command (a ``bokeh-run`` process, as a user starts it) over ``count``
generated JPEGs and samples the process from outside while it works: its resident memory and
its open file descriptors. Throughput comes from the output files themselves: the time the
first thousand took against the time the last thousand took, in the same run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from dbsi.benchmarks.images import generated_image
from dbsi.benchmarks.machine import describe, machine_info

COLUMNS = [
    ("backend", "backend", ""),
    ("pictures", "pictures", "d"),
    ("size", "size", ""),
    ("exit", "exit_code", "d"),
    ("seconds", "seconds", ".1f"),
    ("img/s", "images_per_s", ".1f"),
    ("first 1000 img/s", "first_window_images_per_s", ".1f"),
    ("last 1000 img/s", "last_window_images_per_s", ".1f"),
    ("RSS start MiB", "rss_after_start_mib", ".0f"),
    ("peak RSS MiB", "peak_rss_mib", ".0f"),
    ("RSS end MiB", "rss_at_end_mib", ".0f"),
    ("fds max", "max_open_fds", "d"),
    ("fds at end", "open_fds_at_end", "d"),
]
# Distinct pictures generated; their bytes are repeated under new names to reach ``count``.
DISTINCT = 16
WINDOW = 1000
SAMPLE_EVERY_S = 0.25
# bokeh-run's header names the backend it opened: "...; backend openvino (auto: ...)".
CHOSEN = re.compile(r"; backend (\S+)")


def write_pictures(folder: Path, count: int, height: int, width: int) -> None:
    """``count`` JPEGs in ``folder`` (``00000.jpg`` ...), cycling through ``DISTINCT``
    generated pictures."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = []
    for seed in range(min(count, DISTINCT)):
        ok, data = cv2.imencode(".jpg", generated_image(height, width, seed))
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        encoded.append(data.tobytes())
    for index in range(count):
        (folder / f"{index:05d}.jpg").write_bytes(encoded[index % len(encoded)])


def window_rate(times: list[float], first: bool) -> float | None:
    """Pictures per second over the first (or last) ``WINDOW`` outputs, by their files'
    modification times; None with fewer than two windows' worth."""
    if len(times) < 2 * WINDOW:
        return None
    span = times[WINDOW - 1] - times[0] if first else times[-1] - times[-WINDOW]
    return (WINDOW - 1) / span if span > 0 else None


def watch(process: subprocess.Popen) -> dict[str, Any]:
    """Sample ``process`` (and its children) until it exits: resident memory and open file
    descriptors, the first sample after the model is loaded and the last before exit."""
    import psutil

    watched = psutil.Process(process.pid)
    samples: list[tuple[int, int]] = []
    while process.poll() is None:
        try:
            family = [watched, *watched.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in family)
            fds = watched.num_fds()
        except psutil.Error:
            break
        samples.append((rss, fds))
        time.sleep(SAMPLE_EVERY_S)
    if not samples:
        return {"rss_after_start_bytes": None, "peak_rss_bytes": None, "rss_at_end_bytes": None}
    return {
        # The first sample a second in: the interpreter and the model are loaded by then.
        "rss_after_start_bytes": samples[min(len(samples) - 1, int(1 / SAMPLE_EVERY_S))][0],
        "peak_rss_bytes": max(rss for rss, _ in samples),
        "rss_at_end_bytes": samples[-1][0],
        "max_open_fds": max(fds for _, fds in samples),
        "open_fds_at_end": samples[-1][1],
    }


def soak_row(
    model: Path,
    count: int,
    size: tuple[int, int],
    backend: str = "auto",
    batch: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``bokeh-run`` over ``count`` generated pictures of ``size`` and return what was
    seen (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="bokeh-bench-soak-"))
    try:
        log(f"Writing {count} pictures of {size[0]}x{size[1]} ...")
        write_pictures(work / "in", count, *size)
        command = [
            sys.executable, "-m", "dbsi.runtime.cli", str(model), str(work / "in"),
            "--out", str(work / "out"), "--backend", backend, "--batch", str(batch),
        ]  # fmt: skip
        log(f"Running: {' '.join(command)}")
        started = time.perf_counter()
        with subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as process:
            seen = watch(process)
            stderr = process.stderr.read() if process.stderr else ""
        seconds = time.perf_counter() - started
        times = sorted(p.stat().st_mtime for p in (work / "out").glob("*.jpg"))
        mib = {k: None if v is None else v / 2**20 for k, v in seen.items() if "rss" in k}
        return {
            "backend": chosen.group(1) if (chosen := CHOSEN.search(stderr)) else backend,
            "pictures": count,
            "size": f"{size[0]}x{size[1]}",
            "batch": batch,
            "exit_code": process.returncode,
            "written": len(times),
            "seconds": seconds,
            "images_per_s": len(times) / seconds,
            "first_window_images_per_s": window_rate(times, first=True),
            "last_window_images_per_s": window_rate(times, first=False),
            **seen,
            **{name.replace("_bytes", "_mib"): value for name, value in mib.items()},
            "stderr_tail": stderr[-2000:],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def soak_report(model: Path, count: int, size: tuple[int, int], **options: Any) -> dict:
    """``bokeh-bench soak``'s report: the machine, the row and what its figures mean."""
    machine = machine_info()
    row = soak_row(model, count, size, **options)
    return {
        "command": "soak",
        "machine": machine,
        "machine_summary": describe(machine),
        "model": str(model),
        "rows": [row],
        "notes": [
            f"bokeh-run as a separate process over {count} generated JPEGs; img/s over the "
            "whole run (start-up and model loading included); the first and last "
            f"{WINDOW} by the output files' modification times.",
            f"RSS: the process and its children, sampled every {SAMPLE_EVERY_S} s; 'start' is "
            "the sample a second in, 'end' the last before it exited. fds: the process's open "
            "file descriptors, the most seen and the last sample before it exited.",
        ],
    }
