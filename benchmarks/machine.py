"""What the numbers were measured on: CPU, memory, GPU and library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

# Distribution names to try for each library: the first one installed gives the version.
LIBRARIES = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-lean"),
    "cuda-python": ("cuda-python", "cuda-bindings"),
    "scikit-image": ("scikit-image",),
    "dbsi-bokeh": ("dbsi-bokeh",),
}


def library_versions() -> dict[str, str | None]:
    """Installed version of each library, None when absent (read from package metadata, so
    nothing heavy is imported)."""
    versions: dict[str, str | None] = {}
    for library, distributions in LIBRARIES.items():
        versions[library] = None
        for dist in distributions:
            try:
                versions[library] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None


def gpus() -> list[dict[str, str]]:
    """One entry per NVIDIA GPU that ``nvidia-smi`` lists; empty without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "name,memory.total,driver_version,compute_cap"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    fields = query.split(",")
    return [
        dict(zip(fields, (v.strip() for v in line.split(","))))
        for line in out.splitlines()
        if line.strip()
    ]


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to place a benchmark figure."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": total_ram_bytes(),
        "gpus": gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the console."""
    ram = info.get("ram_bytes")
    parts = [f"{info['cpu_model']} ({info['cpu_count']} cores"]
    parts[0] += f", {ram / 2**30:.0f} GiB RAM)" if ram else ")"
    parts.append(", ".join(g["name"] for g in info["gpus"]) or "no GPU")
    libs = info["libraries"]
    parts.append(
        ", ".join(
            f"{k} {v}" for k, v in libs.items() if v and k in ("torch", "onnxruntime", "tensorrt")
        )
    )
    return "; ".join(p for p in parts if p)
