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
# Temporal smoothing for video (dbsi.train.temporal, dbsi.runtime.temporal): float32
# [1, K, h, w], the weight maps (K = blurs + 1, before the aperture mix) that the frame before
# the batch used, at any size (the graph resizes them to its network size); float32 [N, N + 1],
# row k mixing [that state, the maps predicted for frames 0 .. N-1] into frame k's maps.
# Graphs exported before them render every frame on its own.
TEMPORAL_STATE_NAME = "temporal_state"
TEMPORAL_MIX_NAME = "temporal_mix"
TEMPORAL_INPUTS = (TEMPORAL_STATE_NAME, TEMPORAL_MIX_NAME)
OUTPUT_NAME = "bokeh"
WEIGHTS_NAME = "weights"
# float32 [N, K, h, w]: the maps each picture used, at the network size (the next state).
TEMPORAL_MAPS_NAME = "temporal_maps"
# Each input's element type (numpy's name); every one but the picture is float32.
INPUT_DTYPES = {INPUT_NAME: "uint8", APERTURE_NAME: "float32"} | dict.fromkeys(
    TEMPORAL_INPUTS, "float32"
)
# Every input list a graph may have, oldest first.
INPUT_LAYOUTS = (
    (INPUT_NAME,),
    (INPUT_NAME, APERTURE_NAME),
    (INPUT_NAME, APERTURE_NAME, *TEMPORAL_INPUTS),
)

PRECISIONS = ("fp32", "fp16", "int8-cpu", "int8-tensorrt")
# The int8 graph for ONNX Runtime's CPU kernels has uint8 activations, which TensorRT refuses.
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8-tensorrt")

# What the runtime feeds every graph: it decodes with OpenCV and never converts.
LAYOUT, COLOR_ORDER, INPUT_DTYPE = "NHWC", "BGR", "uint8"

# Limits of the exported graph's dynamic dimensions (the minimum side comes from the config).
MAX_BATCH = 256
MAX_SIDE = 8192

PREFIX = "dbsi."


@dataclasses.dataclass(frozen=True)
class TemporalFeed:
    """What a graph's temporal inputs get for one batch: ``state`` float32 [1, K, h, w] and
    ``mix`` float32 [N, N + 1] (see ``TEMPORAL_STATE_NAME``)."""

    state: np.ndarray
    mix: np.ndarray

    @classmethod
    def independent(cls, pictures: int, maps: int) -> TemporalFeed:
        """Every picture its own maps: a zero 1 x 1 state that the mix ignores. The mix is
        exact (ones and zeros), so the pictures come out bit for bit as without it."""
        mix = np.zeros((pictures, pictures + 1), np.float32)
        mix[:, 1:] = np.eye(pictures, dtype=np.float32)
        return cls(np.zeros((1, maps, 1, 1), np.float32), mix)

    def check(self, pictures: int, maps: int) -> None:
        """ValueError unless this feed fits a batch of ``pictures`` and ``maps`` weight maps."""
        if self.state.ndim != 4 or self.state.shape[:2] != (1, maps):
            raise ValueError(
                f"temporal state must be 1 x {maps} x H x W, got {list(self.state.shape)}"
            )
        if self.mix.shape != (pictures, pictures + 1):
            raise ValueError(
                f"temporal mix must be {pictures} x {pictures + 1} for a batch of {pictures}, "
                f"got {list(self.mix.shape)}"
            )


def graph_inputs(
    names: Sequence[str],
    batch: np.ndarray,
    apertures: np.ndarray | None = None,
    temporal: TemporalFeed | None = None,
) -> dict[str, np.ndarray]:
    """The feed for a graph whose inputs are ``names``: the uint8 batch, the apertures
    (float32, one per picture; 1 when not given) and the temporal inputs when the graph takes
    them (ValueError when it does and ``temporal`` is None)."""
    feed = {INPUT_NAME: np.ascontiguousarray(batch)}
    if APERTURE_NAME in names:
        values = np.ones(len(batch), np.float32) if apertures is None else apertures
        feed[APERTURE_NAME] = np.ascontiguousarray(values, dtype=np.float32)
    if TEMPORAL_STATE_NAME in names:
        if temporal is None:
            raise ValueError("this graph takes temporal inputs: give a TemporalFeed")
        feed[TEMPORAL_STATE_NAME] = np.ascontiguousarray(temporal.state, dtype=np.float32)
        feed[TEMPORAL_MIX_NAME] = np.ascontiguousarray(temporal.mix, dtype=np.float32)
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
    #: the graph's inputs in order, one of ``INPUT_LAYOUTS``: ``image``, ``aperture``, then the
    #: temporal inputs in every graph exported now (older graphs lack the later ones; a graph
    #: from before ``dbsi.inputs`` has ``image`` only, see ``from_props``)
    inputs: tuple[str, ...] = INPUT_LAYOUTS[-1]

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.inputs not in INPUT_LAYOUTS:
            raise ValueError(
                f"inputs {list(self.inputs)} are not one of "
                f"{', '.join(str(list(layout)) for layout in INPUT_LAYOUTS)}"
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
    def takes_temporal(self) -> bool:
        """Whether the graph has the temporal inputs (video smoothing)."""
        return TEMPORAL_STATE_NAME in self.inputs

    @property
    def maps(self) -> int:
        """Weight maps the graph blends: the sharp picture plus one per blur."""
        return len(self.config["kernel_sizes"]) + 1

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
