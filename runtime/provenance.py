"""What artefacts record about where they came from: content hashes that tie a checkpoint to
its ONNX and an ONNX to its engine, and the toolkit version that wrote them."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def toolkit_version() -> str:
    """The installed dbsi-bokeh version, or "unknown" when run from an uninstalled tree."""
    try:
        return metadata.version("dbsi-bokeh")
    except metadata.PackageNotFoundError:
        return "unknown"
