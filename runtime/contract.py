"""The ONNX graph artefact's contract: what every exported graph takes and returns, and the
``dbsi.*`` metadata_props that describe it (docs/ARTEFACTS.md). The exporter writes it, every
backend and the benchmarks read it; this is the only module that spells a metadata key.
No torch, no onnx: plain Python the lean runtime imports.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dbsi.runtime.errors import MetadataError

ONNX_FORMAT = "dbsi-onnx"
ONNX_FORMAT_VERSION = 1
ONNX_SUFFIX = ".onnx"

INPUT_NAME = "image"
# float32 [N], one value per picture; graphs exported before it take only ``image``. The graph
# clamps it to APERTURE_RANGE (dbsi.train.aperture).
APERTURE_NAME = "aperture"
APERTURE_RANGE = (0.0, 4.0)
OUTPUT_NAME = "bokeh"
WEIGHTS_NAME = "weights"

PRECISIONS = ("fp32", "fp16", "int8-cpu", "int8-tensorrt")
# The int8 graph for ONNX Runtime's CPU kernels has uint8 activations, which TensorRT refuses.
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8-tensorrt")

# What the runtime feeds every graph: it decodes with OpenCV and never converts.
LAYOUT, COLOR_ORDER, INPUT_DTYPE = "NHWC", "BGR", "uint8"

# Limits of the exported graph's dynamic dimensions (the minimum side comes from the config).
MAX_BATCH = 256
MAX_SIDE = 8192

PREFIX = "dbsi."


def graph_inputs(
    names: Sequence[str], batch: np.ndarray, apertures: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The feed for a graph whose inputs are ``names``: the uint8 batch, and the apertures
    (float32, one per picture; 1 when not given) when the graph takes them."""
    feed = {INPUT_NAME: np.ascontiguousarray(batch)}
    if APERTURE_NAME in names:
        values = np.ones(len(batch), np.float32) if apertures is None else apertures
        feed[APERTURE_NAME] = np.ascontiguousarray(values, dtype=np.float32)
    return feed


def check_format(
    document: Mapping[str, Any],
    source: str,
    *,
    what: str,
    format_key: str,
    format_tag: str,
    version_key: str,
    version: Any,
    required: Sequence[str],
    fix: str,
) -> None:
    """The check every artefact starts with: its format tag, its format version, then every
    required key; MetadataError naming ``source`` and the first problem otherwise. ``what``
    names the artefact in messages, ``fix`` says what to do about a foreign file."""
    if document.get(format_key) != format_tag:
        raise MetadataError(
            f"{source}: not a DBSI {what} (no '{format_key}' = '{format_tag}'); {fix}"
        )
    found = document.get(version_key)
    if found != version:
        raise MetadataError(
            f"{source}: DBSI {what} format version {found} is not supported (this toolkit reads "
            f"version {version})"
        )
    missing = [key for key in required if key not in document]
    if missing:
        raise MetadataError(f"{source}: DBSI {what} lacks {', '.join(missing)}")


@dataclasses.dataclass(frozen=True)
class GraphMetadata:
    """The ``dbsi.*`` metadata of an exported graph, typed.

    ``config`` is the render config (``BokehConfig.to_dict()``); ``outputs`` the graph's output
    names in order; the input sides bound what the graph accepts."""

    config: dict[str, Any]
    min_input_side: int
    max_input_side: int
    outputs: tuple[str, ...]
    precision: str
    checkpoint_sha256: str
    toolkit_version: str
    #: int8 graphs: how they were calibrated (``images``, ``skipped``, ``method``,
    #: ``files_sha256``); None otherwise
    calibration: dict[str, Any] | None = None
    #: the graph's inputs in order: ``image``, then ``aperture`` (every graph exported since
    #: the aperture input; graphs from before have ``image`` only, see ``from_props``)
    inputs: tuple[str, ...] = (INPUT_NAME, APERTURE_NAME)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.inputs not in ((INPUT_NAME,), (INPUT_NAME, APERTURE_NAME)):
            raise ValueError(
                f"inputs {list(self.inputs)} are not ['image'] or ['image', 'aperture']"
            )

    def to_props(self) -> dict[str, str]:
        """The metadata_props entries, every value a string (JSON where structured)."""
        return {
            f"{PREFIX}format": ONNX_FORMAT,
            f"{PREFIX}format_version": str(ONNX_FORMAT_VERSION),
            f"{PREFIX}config": json.dumps(self.config, sort_keys=True),
            f"{PREFIX}layout": LAYOUT,
            f"{PREFIX}color_order": COLOR_ORDER,
            f"{PREFIX}input_dtype": INPUT_DTYPE,
            f"{PREFIX}min_input_side": str(self.min_input_side),
            f"{PREFIX}max_input_side": str(self.max_input_side),
            f"{PREFIX}outputs": json.dumps(list(self.outputs)),
            f"{PREFIX}precision": self.precision,
            f"{PREFIX}checkpoint_sha256": self.checkpoint_sha256,
            f"{PREFIX}toolkit_version": self.toolkit_version,
            f"{PREFIX}inputs": json.dumps(list(self.inputs)),
            **(
                {}
                if self.calibration is None
                else {f"{PREFIX}calibration": json.dumps(self.calibration, sort_keys=True)}
            ),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> GraphMetadata:
        """Read and validate the ``dbsi.*`` entries of ``props`` (other keys are ignored);
        MetadataError naming ``source`` when one is missing, malformed, or describes a graph
        this toolkit cannot feed."""
        dbsi = {k: v for k, v in props.items() if k.startswith(PREFIX)}
        check_format(
            dbsi,
            source,
            what="model",
            format_key=f"{PREFIX}format",
            format_tag=ONNX_FORMAT,
            version_key=f"{PREFIX}format_version",
            version=str(ONNX_FORMAT_VERSION),
            required=REQUIRED_KEYS,
            fix="export it with bokeh-export",
        )
        for key, expected in (("layout", LAYOUT), ("color_order", COLOR_ORDER)):
            if dbsi[PREFIX + key] != expected:
                raise MetadataError(
                    f"{source}: {PREFIX}{key} is {dbsi[PREFIX + key]!r}, this toolkit feeds "
                    f"{expected}"
                )
        if dbsi[f"{PREFIX}input_dtype"] != INPUT_DTYPE:
            raise MetadataError(
                f"{source}: {PREFIX}input_dtype is {dbsi[f'{PREFIX}input_dtype']!r}, this toolkit "
                f"feeds {INPUT_DTYPE}"
            )
        try:
            config = json.loads(dbsi[f"{PREFIX}config"])
            outputs = json.loads(dbsi[f"{PREFIX}outputs"])
            sides = int(dbsi[f"{PREFIX}min_input_side"]), int(dbsi[f"{PREFIX}max_input_side"])
            calibration = json.loads(dbsi.get(f"{PREFIX}calibration", "null"))
            inputs = json.loads(dbsi.get(f"{PREFIX}inputs", json.dumps([INPUT_NAME])))
        except ValueError as exc:
            raise MetadataError(f"{source}: malformed DBSI metadata ({exc})") from exc
        if not isinstance(config, dict) or "kernel_sizes" not in config:
            raise MetadataError(f"{source}: {PREFIX}config is not a render config")
        if not isinstance(outputs, list) or OUTPUT_NAME not in outputs:
            raise MetadataError(
                f"{source}: {PREFIX}outputs {outputs!r} does not list '{OUTPUT_NAME}'"
            )
        if not 0 < sides[0] <= sides[1]:
            raise MetadataError(f"{source}: input side limits {sides} make no sense")
        precision = dbsi[f"{PREFIX}precision"]
        if precision not in PRECISIONS:
            raise MetadataError(f"{source}: unknown precision {precision!r}")
        try:
            return cls(
                config=config,
                min_input_side=sides[0],
                max_input_side=sides[1],
                outputs=tuple(outputs),
                precision=precision,
                checkpoint_sha256=dbsi[f"{PREFIX}checkpoint_sha256"],
                toolkit_version=dbsi[f"{PREFIX}toolkit_version"],
                calibration=calibration,
                inputs=tuple(inputs),
            )
        except ValueError as exc:
            raise MetadataError(f"{source}: {exc}") from exc

    @property
    def takes_aperture(self) -> bool:
        """Whether the graph has the ``aperture`` input."""
        return APERTURE_NAME in self.inputs

    @property
    def for_tensorrt(self) -> bool:
        """Whether TensorRT can build this graph (every precision but ``int8-cpu``)."""
        return self.precision in TENSORRT_PRECISIONS

    def replace(self, **changes: Any) -> GraphMetadata:
        """A copy with ``changes`` (field names) applied."""
        return dataclasses.replace(self, **changes)


# Entries of later format additions: a graph without them still reads (as one ``image`` input
# and no calibration).
OPTIONAL_KEYS = (f"{PREFIX}inputs", f"{PREFIX}calibration")
# Every entry an export writes that every reader needs (docs/ARTEFACTS.md).
REQUIRED_KEYS = tuple(
    key
    for key in GraphMetadata(
        config={},
        min_input_side=1,
        max_input_side=1,
        outputs=(),
        precision="fp32",
        checkpoint_sha256="",
        toolkit_version="",
    ).to_props()
    if key not in OPTIONAL_KEYS
)
