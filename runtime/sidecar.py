"""The engine artefact's contract: a serialized TensorRT engine and, next to it, the JSON
sidecar that says what it is (docs/ARTEFACTS.md). ``bokeh-export engine`` writes it; the native
TensorRT backend trusts an engine only through it; ``bokeh-export info`` shows it. This is the
only module that spells a sidecar key.
"""

from __future__ import annotations

import dataclasses
import json
from hashlib import sha256
from pathlib import Path
from typing import Any

from dbsi.runtime.atomic import atomic_write_text
from dbsi.runtime.contract import GraphMetadata, check_format
from dbsi.runtime.errors import BackendError, MetadataError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
SIDECAR_FORMAT = "dbsi-engine-sidecar"
SIDECAR_FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "profile",
    "version_compatible",
    "engine_sha256",
    "onnx_metadata",
)


@dataclasses.dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built from, with what, for which GPU, and its hash. Fields after
    ``onnx_metadata`` are informative: a sidecar without them still loads."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: dict[str, list[int]]
    version_compatible: bool
    engine_sha256: str
    onnx_metadata: GraphMetadata
    precision: str | None = None
    tf32: bool | None = None
    workspace_bytes: int | None = None
    timing_cache_bytes_loaded: int | None = None
    onnx_sha256: str | None = None
    build_seconds: float | None = None
    built_at: str | None = None
    toolkit_version: str | None = None

    @property
    def effective_precision(self) -> str:
        """The engine's precision: the sidecar's, else the ONNX's."""
        return self.precision or self.onnx_metadata.precision

    def to_dict(self) -> dict[str, Any]:
        """The sidecar as JSON-ready data (the ONNX metadata as its metadata_props)."""
        data = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_FORMAT_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "onnx_metadata":
                value = value.to_props()
            if value is not None:
                data[field.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> EngineSidecar:
        """Validate sidecar data; MetadataError naming ``source`` otherwise."""
        if not isinstance(data, dict):
            raise MetadataError(f"{source}: not a DBSI engine sidecar (not a JSON object)")
        check_format(
            data,
            source,
            what="engine sidecar",
            format_key="format",
            format_tag=SIDECAR_FORMAT,
            version_key="format_version",
            version=SIDECAR_FORMAT_VERSION,
            required=REQUIRED_KEYS,
            fix="rebuild with bokeh-export engine",
        )
        profile = data["profile"]
        try:
            for key in ("min", "opt", "max"):
                if len(profile[key]) != 4:
                    raise ValueError(f"profile {key} {profile[key]} is not N x H x W x 3")
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{source}: bad optimisation profile ({exc})") from exc
        names = {field.name for field in dataclasses.fields(cls)}
        fields = {key: value for key, value in data.items() if key in names}
        fields["onnx_metadata"] = GraphMetadata.from_props(data["onnx_metadata"], source)
        fields["compute_capability"] = str(fields["compute_capability"])
        return cls(**fields)


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> None:
    """Write ``<engine_path>.json`` atomically."""
    atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar.to_dict(), indent=2) + "\n")


def read_sidecar(path: str | Path, engine_bytes: bytes | None = None) -> EngineSidecar:
    """Load and check the sidecar of an engine; BackendError naming the file otherwise.

    ``path`` is the engine, or its sidecar when only the sidecar is wanted. With
    ``engine_bytes`` (the engine file as the caller read it, once, to deserialize those same
    bytes) their sha256 must be the one the sidecar records; without them (for display,
    ``bokeh-export info``) the engine file need not be there."""
    path = Path(path)
    if engine_bytes is None and path.suffix == ".json":
        json_path, engine_path = path, path.with_name(path.name[: -len(".json")])
    else:
        json_path, engine_path = sidecar_path(path), path
    if not json_path.is_file():
        raise BackendError(
            f"{engine_path}: no sidecar {json_path.name} next to it; an engine is loaded only "
            "with the sidecar bokeh-export writes (rebuild with: bokeh-export engine)"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackendError(f"{json_path}: unreadable sidecar ({exc})") from exc
    sidecar = EngineSidecar.from_dict(data, str(json_path))
    if engine_bytes is not None and sha256(engine_bytes).hexdigest() != sidecar.engine_sha256:
        raise BackendError(
            f"{engine_path}: its sha256 differs from the one in {json_path.name}; the engine and "
            "the sidecar do not belong together"
        )
    return sidecar
