"""The checkpoint artefact: weights plus the full render config, so that export needs nothing
else. Training adds its own state (optimiser, scheduler, RNG, metrics) under further keys.

Files are read with ``torch.load(weights_only=True)``: a checkpoint never runs code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from dbsi.runtime.atomic import atomic_write_bytes
from dbsi.runtime.contract import check_format
from dbsi.runtime.provenance import toolkit_version
from dbsi.train.config import BokehConfig
from dbsi.train.render import BokehRenderer

CHECKPOINT_FORMAT = "dbsi-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, renderer: BokehRenderer, **state: Any) -> None:
    """Write the renderer's weights and config, plus any extra ``state``, atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "toolkit_version": toolkit_version(),
        "config": renderer.config.to_dict(),
        "model": renderer.predictor.state_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a DBSI checkpoint; ValueError naming the file on anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a DBSI checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    check_format(
        payload,
        str(path),
        what="checkpoint",
        format_key="format",
        format_tag=CHECKPOINT_FORMAT,
        version_key="format_version",
        version=CHECKPOINT_FORMAT_VERSION,
        required=("config", "model"),
        fix="train one with bokeh-train",
    )
    try:
        BokehConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid render config: {exc}") from exc
    return payload


def renderer_from_checkpoint(
    payload: dict[str, Any], source: str = "checkpoint", mode: str | None = None
) -> BokehRenderer:
    """Build the renderer a checkpoint describes and load its weights (eval mode).

    ``mode`` replaces the stored render mode: the weights serve both modes."""
    config = payload["config"] if mode is None else {**payload["config"], "mode": mode}
    renderer = BokehRenderer(BokehConfig.from_dict(config))
    try:
        result = renderer.predictor.load_state_dict(payload["model"], strict=False)
    except RuntimeError as exc:  # mis-shaped tensors
        raise ValueError(f"{source}: weights do not fit the config: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: weights do not fit the config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return renderer.eval()


def load_renderer(path: str | Path, mode: str | None = None) -> BokehRenderer:
    """The renderer stored in a checkpoint file, in eval mode (``mode`` overrides its mode)."""
    return renderer_from_checkpoint(read_checkpoint(path), str(path), mode)
