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


# The CPU features that decide which int8 and bf16 kernels run, best first, as /proc/cpuinfo's
# flags name them (Linux arch/x86/include/asm/cpufeatures.h): label and the flags it needs.
ISA_FEATURES = (
    ("AMX-INT8", ("amx_tile", "amx_int8")),
    ("AMX-BF16", ("amx_tile", "amx_bf16")),
    ("AVX-512 VNNI", ("avx512_vnni",)),
    ("AVX-512 BF16", ("avx512_bf16",)),
    ("AVX-512 FP16", ("avx512_fp16",)),
    ("AVX-VNNI", ("avx_vnni",)),
    ("AVX-512", ("avx512f",)),
    ("AVX2", ("avx2",)),
)
# The widest int8 dot-product path, first match: what the int8 speed-ups depend on.
INT8_PATHS = (
    ("AMX", "AMX-INT8"),
    ("AVX-512 VNNI", "AVX-512 VNNI"),
    ("AVX-VNNI (256-bit)", "AVX-VNNI"),
    ("AVX-512 without VNNI", "AVX-512"),
    ("AVX2 only", "AVX2"),
)


def cpu_isa(cpuinfo: str) -> dict[str, Any]:
    """The vector ISA that ``/proc/cpuinfo`` text reports (its first ``flags`` line):
    ``features``, the ``ISA_FEATURES`` labels present, and ``int8``, the widest int8
    dot-product path (``INT8_PATHS``; "unknown" without x86 flags). A virtual machine may hide
    flags the CPU has (KVM often hides AMX): this is what the process can use."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    features = [label for label, needs in ISA_FEATURES if flags.issuperset(needs)]
    int8 = next((path for path, label in INT8_PATHS if label in features), "unknown")
    return {"int8": int8, "features": features}


def read_cpu_isa() -> dict[str, Any]:
    """``cpu_isa`` of this machine's /proc/cpuinfo (unknown where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_isa(f.read())
    except OSError:
        return cpu_isa("")


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
        "cpu_isa": read_cpu_isa(),
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
    parts[0] += f", {ram / 2**30:.0f} GiB RAM" if ram else ""
    isa = info.get("cpu_isa")
    parts[0] += f"; int8 path {isa['int8']}: {', '.join(isa['features']) or '-'})" if isa else ")"
    parts.append(", ".join(g["name"] for g in info["gpus"]) or "no GPU")
    libs = info["libraries"]
    parts.append(
        ", ".join(
            f"{k} {v}" for k, v in libs.items() if v and k in ("torch", "onnxruntime", "tensorrt")
        )
    )
    return "; ".join(p for p in parts if p)
