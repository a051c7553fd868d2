"""The ``dbsi.*`` metadata_props of an exported ONNX (docs/ARTEFACTS.md): build, write, read
and validate them. Everything a consumer needs (layout, colour order, kernel sizes, network
size, render mode, input limits, provenance) travels here.

No torch: ``bokeh-export info`` and ``bokeh-export engine`` run where only onnx is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from dbsi.runtime.contract import INPUT_LAYOUT, ONNX_FORMAT, ONNX_FORMAT_VERSION

PRECISIONS = ("fp32", "fp16")
PREFIX = "dbsi."
REQUIRED_KEYS = (
    "dbsi.format",
    "dbsi.format_version",
    "dbsi.config",
    "dbsi.layout",
    "dbsi.color_order",
    "dbsi.input_dtype",
    "dbsi.min_input_side",
    "dbsi.max_input_side",
    "dbsi.outputs",
    "dbsi.precision",
    "dbsi.checkpoint_sha256",
    "dbsi.toolkit_version",
)


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
    """The validated ``dbsi.*`` metadata of ``model``; ValueError naming ``source`` otherwise."""
    props = {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    if props.get("dbsi.format") != ONNX_FORMAT:
        raise ValueError(
            f"{source}: ONNX has no DBSI metadata (no 'dbsi.format' = '{ONNX_FORMAT}'); "
            "was it exported with bokeh-export?"
        )
    if props.get("dbsi.format_version") != str(ONNX_FORMAT_VERSION):
        raise ValueError(
            f"{source}: DBSI ONNX format version {props.get('dbsi.format_version')} is not "
            f"supported (this toolkit reads version {ONNX_FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in props]
    if missing:
        raise ValueError(f"{source}: DBSI metadata lacks {', '.join(missing)}")
    try:
        config = json.loads(props["dbsi.config"])
        outputs = json.loads(props["dbsi.outputs"])
        sides = int(props["dbsi.min_input_side"]), int(props["dbsi.max_input_side"])
    except ValueError as exc:
        raise ValueError(f"{source}: malformed DBSI metadata: {exc}") from exc
    if not isinstance(config, dict) or "kernel_sizes" not in config:
        raise ValueError(f"{source}: dbsi.config is not a render config")
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"{source}: dbsi.outputs is not a list of output names")
    if not 0 < sides[0] <= sides[1]:
        raise ValueError(f"{source}: input side limits {sides} make no sense")
    if props["dbsi.precision"] not in PRECISIONS:
        raise ValueError(f"{source}: unknown precision {props['dbsi.precision']!r}")
    return props


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
