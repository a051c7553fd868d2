"""The ``dbsi.*`` metadata_props of an exported ONNX (docs/ARTEFACTS.md): build, write and read
them; validation is the runtime's ``check_dbsi_metadata``, so the exporter and every backend
accept the same artefacts. Everything a consumer needs (layout, colour order, kernel sizes,
network size, render mode, input limits, provenance) travels here.

No torch: ``bokeh-export info`` and ``bokeh-export engine`` run where only onnx is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from dbsi.runtime.backend import check_dbsi_metadata
from dbsi.runtime.contract import INPUT_LAYOUT, ONNX_FORMAT, ONNX_FORMAT_VERSION, PRECISIONS

PREFIX = "dbsi."


def build_metadata(
    config: dict[str, Any],
    *,
    min_input_side: int,
    max_input_side: int,
    outputs: list[str],
    precision: str,
    checkpoint_sha256: str,
    toolkit_version: str,
) -> dict[str, str]:
    """The ``dbsi.*`` entries for an export of the render ``config`` (``BokehConfig.to_dict()``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return {
        "dbsi.format": ONNX_FORMAT,
        "dbsi.format_version": str(ONNX_FORMAT_VERSION),
        "dbsi.config": json.dumps(config, sort_keys=True),
        **INPUT_LAYOUT,
        "dbsi.min_input_side": str(min_input_side),
        "dbsi.max_input_side": str(max_input_side),
        "dbsi.outputs": json.dumps(outputs),
        "dbsi.precision": precision,
        "dbsi.checkpoint_sha256": checkpoint_sha256,
        "dbsi.toolkit_version": toolkit_version,
    }


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the model's ``dbsi.*`` metadata_props with ``metadata`` (others are kept)."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value


def model_metadata(model: onnx.ModelProto, source: str) -> dict[str, str]:
    """The validated ``dbsi.*`` metadata of ``model``; MetadataError (a ValueError) naming
    ``source`` otherwise."""
    return check_dbsi_metadata({p.key: p.value for p in model.metadata_props}, source)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file; ValueError naming the file when it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others on foreign files
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The validated ``dbsi.*`` metadata of the ONNX file at ``path``."""
    return model_metadata(load_onnx(path), str(path))


def render_config(metadata: dict[str, str]) -> dict[str, Any]:
    """The render config (``BokehConfig.to_dict()``) carried by validated metadata."""
    return json.loads(metadata["dbsi.config"])
