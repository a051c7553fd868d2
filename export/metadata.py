"""An ONNX file's ``dbsi.*`` metadata_props (docs/ARTEFACTS.md): write them into a model, read
and validate them from a model or a file. The entries and their validation are the runtime's
``GraphMetadata`` (``dbsi.runtime.contract``), so the exporter and every backend accept the same
artefacts.

No torch: ``bokeh-export info`` and ``bokeh-export engine`` run where only onnx is installed.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from dbsi.runtime.contract import PREFIX, GraphMetadata


def set_metadata(model: onnx.ModelProto, metadata: GraphMetadata) -> None:
    """Replace the model's ``dbsi.*`` metadata_props with ``metadata`` (others are kept)."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.to_props().items()]:
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value


def has_metadata(model: onnx.ModelProto) -> bool:
    """Whether ``model`` carries any ``dbsi.*`` entry."""
    return any(p.key.startswith(PREFIX) for p in model.metadata_props)


def model_metadata(model: onnx.ModelProto, source: str) -> GraphMetadata:
    """The validated metadata of ``model``; MetadataError (a ValueError) naming ``source``
    otherwise."""
    return GraphMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file; ValueError naming the file when it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others on foreign files
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc


def read_metadata(path: str | Path) -> GraphMetadata:
    """The validated metadata of the ONNX file at ``path``."""
    return model_metadata(load_onnx(path), str(path))
