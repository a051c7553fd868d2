"""OpenVINO backend: the same exported ONNX graphs on Intel's CPU runtime, which reads ONNX
directly and runs the int8 ``cpu`` flavour's u8 x i8 convolutions fastest on x86.

- Precision is explicit: ``INFERENCE_PRECISION_HINT`` is ``f32`` unless ``bf16`` is asked for.
  Left to itself OpenVINO runs bf16 on CPUs that have it (it did on this toolkit's AVX-512 test
  CPU, where bf16 also took minutes per photo), which changes pixels.
- Shapes: one dynamic-shape model serves every batch shape (batch size and picture size), and
  a shape met a second time gets a model compiled for it while fewer than ``MAX_STATIC`` are
  kept; when they are full, a shape takes the slot of the least used one only once it has been
  met twice as often, so a folder of many sizes never recompiles shapes in turns. Measured on
  a 2-core EPYC with the full-width graphs at 1024x1536 and similar sizes: a model compiled for one
  shape runs 3% (fp32) to 16-27% (int8) faster than the dynamic one, but costs 1.5-3 s to
  compile, so compiling every new shape made a folder of mixed sizes slower (each photo of a
  new size paid the compilation), while a folder of one size (a camera's) gains from its
  second photo on.
- bf16 keeps the blur bank in f32: compiled for bf16 on an AVX-512 BF16 CPU, a grouped
  convolution with a 1 x K kernel, K >= 15 (the blur's row passes), never finishes compiling
  (measured with OpenVINO 2026.4.1 on an Intel Xeon without AMX; K <= 14 and K x 1 compile at
  once), the same oneDNN depthwise family whose f16 kernel hangs in PyTorch
  (``dbsi.benchmarks.torch_renders``). A Gaussian tail is below a bf16 step anyway.
- Inference threads are OpenVINO's (``PERFORMANCE_HINT`` LATENCY: one request, every core);
  ``bokeh-run --workers`` sizes only the decode and encode threads around it.
- One ``Core`` serves the whole process and is never destroyed (``process_core``): see there.
- The graph's ``dbsi.*`` metadata_props come through OpenVINO's runtime info, under
  ``framework`` (openvinotoolkit/openvino#13712).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.backend import Backend, describe_shape_problem
from dbsi.runtime.contract import (
    INPUT_DTYPES,
    MAX_BATCH,
    OUTPUT_NAME,
    GraphMetadata,
    MetadataError,
    TemporalFeed,
    graph_inputs,
)
from dbsi.runtime.errors import BackendError

PRECISIONS = {"f32": "fp32", "bf16": "bf16"}
# Shape-specific models kept at once (each holds its own compiled graph and buffers).
MAX_STATIC = 4


def _import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(
            "openvino is not installed: pip install 'dbsi-bokeh[cpu]' (it brings OpenVINO)"
        ) from exc
    return openvino


@functools.cache
def process_core() -> Any:
    """The process's one OpenVINO ``Core``, kept until the process exits.

    Why never destroyed: the CPU plugin a Core loads gives the loading thread an alternate
    signal stack (``SigAltStackSetup``, src/plugins/intel_cpu/src/sigstack_manager.cpp,
    openvinotoolkit/openvino#11894) and unmaps it in its destructor, putting the old one back
    with ``sigaltstack``, which acts on the calling thread only. Python runs its signal handlers
    on the alternate stack (``SA_ONSTACK`` since 3.10, bpo-43390). A Core destroyed on another
    thread (a garbage collection there, a worker dropping the last reference) so left the
    loading thread a stack that no longer exists, and the next signal handled there killed the
    process with SIGSEGV: every time in ``tests/openvino_signal_stack.py``, and the cause of
    the crashes of full test runs (docs/DESIGN.md section 6)."""
    return _import_openvino().Core()


def graph_props(model) -> dict[str, str]:
    """The ONNX metadata_props of a model OpenVINO read, as strings."""
    if not model.has_rt_info(["framework"]):
        return {}
    entries = model.get_rt_info(["framework"]).value
    # Entries come as OVAny or already as str, depending on how the map was reached.
    return {
        key: value.astype(str) if hasattr(value, "astype") else str(value)
        for key, value in entries.items()
    }


def graph_precision(path: Path) -> str | None:
    """The precision an exported graph's metadata records, read by OpenVINO without compiling
    it; None when OpenVINO cannot read the file or its metadata is not the toolkit's (opening
    it says why)."""
    try:
        model = process_core().read_model(str(path))
    except Exception:  # OpenVINO raises RuntimeError subclasses per failure
        return None
    try:
        return GraphMetadata.from_props(graph_props(model), str(path)).precision
    except MetadataError:
        return None


def blur_convolutions(model: Any) -> list[str]:
    """The friendly names of the blur bank's layers in an OpenVINO model: the grouped
    convolutions that read a Pad (the predictor's convolutions pad themselves)."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "GroupConvolution"
        and op.input_value(0).get_node().get_type_name() == "Pad"
    ]


def keep_in_f32(ov: Any, core: Any, model: Any, names: Sequence[str]) -> Any:
    """A copy of ``model`` whose layers ``names`` the CPU plugin keeps in their own precision
    under a bf16 or f16 hint. The mark is the runtime-info attribute
    ``DisablePrecisionConversion`` (``ov::disable_conversion``,
    src/common/transformations/include/transformations/rt_info/disable_precision_conversion.hpp),
    which the CPU plugin's ``Graph::EnforceInferencePrecision`` honours for bf16
    (openvinotoolkit/openvino#21440). Python cannot set it on a model in memory (its value is a
    C++ type), so it is written into the model's IR and the IR read back, all in memory."""
    import tempfile
    from xml.etree import ElementTree

    with tempfile.TemporaryDirectory(prefix="dbsi-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        tree = ElementTree.parse(xml)
        weights = np.fromfile(xml.with_suffix(".bin"), np.uint8)
    wanted = set(names)
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") in wanted:
            info = layer.find("rt_info")
            if info is None:
                info = ElementTree.SubElement(layer, "rt_info")
            ElementTree.SubElement(
                info,
                "attribute",
                {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:f16"},
            )
    text = ElementTree.tostring(tree.getroot(), encoding="unicode")
    return core.read_model(text, ov.Tensor(weights))


def model_for_hint(ov: Any, core: Any, model: Any, hint: str) -> Any:
    """``model`` as the CPU plugin is to compile it at precision ``hint``: under bf16 with the
    blur bank kept in f32 (see the module docstring)."""
    if hint == "bf16":
        return keep_in_f32(ov, core, model, blur_convolutions(model))
    return model


def compile_config(hint: str) -> dict[str, str]:
    """The CPU plugin's settings for a precision ``hint`` (a key of ``PRECISIONS``): that
    precision, never OpenVINO's own choice, and one request on every core."""
    return {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}


class OpenVINOBackend(Backend):
    """A DBSI ONNX graph compiled by OpenVINO for the CPU."""

    # The second call on a shape compiles the model for it (see the module docstring); the
    # third already runs at the steady speed (measured, full-width int8 at 1024x1536).
    warmup_calls = 2

    def __init__(self, path: str | Path, openvino_precision: str | None = None) -> None:
        ov = _import_openvino()
        self.path = Path(path)
        hint = openvino_precision or "f32"
        if hint not in PRECISIONS:
            raise BackendError(f"OpenVINO precision {hint!r} is not one of {', '.join(PRECISIONS)}")
        core = process_core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses per failure
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(f"{self.path}: OpenVINO cannot read it ({first_line})") from exc
        self.metadata = GraphMetadata.from_props(graph_props(model), str(self.path))
        if hint != "f32" and self.metadata.precision != "fp32":
            # An int8 graph's float layers would compute in bf16 under a label that says int8
            # (and ran slower than in f32 on an AVX-512 BF16 Xeon without AMX, measured).
            raise BackendError(
                f"{self.path}: OpenVINO precision {hint} applies to fp32 graphs, this one is "
                f"{self.metadata.precision}"
            )
        inputs = [
            (port.get_any_name(), port.get_element_type().get_type_name()) for port in model.inputs
        ]
        openvino_types = {"uint8": "u8", "float32": "f32"}
        expected = [(name, openvino_types[INPUT_DTYPES[name]]) for name in self.metadata.inputs]
        if inputs != expected:
            raise BackendError(f"{self.path}: expected the inputs {expected}, found {inputs}")
        self.outputs = [port.get_any_name() for port in model.outputs]
        if OUTPUT_NAME not in self.outputs:
            raise BackendError(f"{self.path}: the graph has no 'bokeh' output ({self.outputs})")
        self._core, self._model = core, model_for_hint(ov, core, model, hint)
        self._config = compile_config(hint)
        self._compiled = self._compile(self._model)
        self._request = self._compiled.create_infer_request()
        # Batches met per shape, and the requests of the shapes with a model of their own.
        self._seen: collections.Counter[tuple] = collections.Counter()
        self._static: dict[tuple, Any] = {}
        self._hint = hint
        self.name = "openvino"

    def _compile(self, model: Any) -> Any:
        try:
            return self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses per failure
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(f"{self.path}: OpenVINO cannot compile it ({first_line})") from exc

    def _request_for(self, shapes: dict[str, tuple[int, ...]]) -> Any:
        """The request for a feed of these input ``shapes``: the shapes' own model from their
        second batch on while there is room or they are used far more than ones that have a
        model (see the module docstring); the dynamic one otherwise."""
        key = tuple((name, tuple(shape)) for name, shape in shapes.items())
        self._seen[key] += 1
        if key in self._static:
            return self._static[key]
        count = self._seen[key]
        if count < 2:
            return self._request
        if len(self._static) >= MAX_STATIC:
            # Twice as often, not just more often: shapes met equally often would otherwise
            # take turns, each compile costing 1.5-3 s.
            least = min(self._static, key=self._seen.__getitem__)
            if count < 2 * self._seen[least]:
                return self._request
            del self._static[least]
        model = self._model.clone()
        model.reshape({name: list(shape) for name, shape in shapes.items()})
        self._static[key] = self._compile(model).create_infer_request()
        return self._static[key]

    @property
    def device(self) -> str:
        return "CPU"

    @property
    def precision(self) -> str:
        """The graph's precision, or bf16 when OpenVINO was asked to compute the (fp32) graph
        in bf16."""
        return PRECISIONS[self._hint] if self._hint == "bf16" else self.metadata.precision

    def accepts(self, shape: Sequence[int]) -> str | None:
        side = self.metadata.min_input_side, self.metadata.max_input_side
        return describe_shape_problem(shape, (1, side[0], side[0]), (MAX_BATCH, side[1], side[1]))

    def _run(
        self, batch: np.ndarray, apertures: np.ndarray | None, temporal: TemporalFeed | None
    ) -> dict[str, np.ndarray]:
        feed = graph_inputs(self.metadata.inputs, batch, apertures, temporal)
        request = self._request_for({name: values.shape for name, values in feed.items()})
        results = request.infer(feed)
        # Copies: the request's output tensors are reused by the next call.
        return {name: np.array(results[name], copy=True) for name in self.outputs}

    def close(self) -> None:
        # The compiled models and their buffers go now; the Core is the process's
        # (``process_core``) and stays.
        self._request = self._compiled = self._model = self._core = None
        self._static.clear()
