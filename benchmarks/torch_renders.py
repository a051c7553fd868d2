"""PyTorch renders to benchmark: the eager fp32 reference (``PixelsToBokeh`` around a
``BokehRenderer``: the same uint8 NHWC BGR in and out as the ONNX graph) and, on CUDA, faster
variants beside it (16-bit autocast with channels_last, and the same captured as CUDA graphs).
torch is imported inside the functions, so importing this module needs no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dbsi.benchmarks.candidates import REFERENCE_NAME, Candidate
from dbsi.benchmarks.timing import GpuMemory, no_gpu_memory, wall_clock

ALLOCATOR_PEAK = (
    "PyTorch's caching-allocator peak during the row, less what was allocated before it, plus "
    "what the model holds (weights, CUDA-graph pools)"
)


def allocator_peak(held_bytes: Callable[[], int]) -> Callable[[], Any]:
    """A ``Candidate.gpu_memory`` for a PyTorch render on CUDA: the allocator's peak over the
    block (after a reset) less what was allocated when it began (every model measured in this
    process, and the cache), plus ``held_bytes()`` at the start: what this render keeps
    allocated between calls (its weights, and the pools of CUDA graphs captured earlier)."""

    @contextlib.contextmanager
    def measure() -> Iterator[GpuMemory]:
        import torch

        torch.cuda.synchronize()
        before, held = torch.cuda.memory_allocated(), held_bytes()
        torch.cuda.reset_peak_memory_stats()
        figure = GpuMemory(None, ALLOCATOR_PEAK)
        yield figure
        torch.cuda.synchronize()
        figure.peak_bytes = torch.cuda.max_memory_allocated() - before + held

    return measure


def tensor_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def torch_reference(renderer: Any, source: str, device: str = "auto") -> Candidate:
    """The PyTorch eager fp32 render of ``renderer`` (a BokehRenderer), on CUDA when there is
    one (timed with CUDA events), else CPU. Input and output stay host uint8 arrays, as for
    every runtime backend, so the copies are inside the timing."""
    import torch

    from dbsi.benchmarks.timing import cuda_event_clock
    from dbsi.export.onnx_graph import PixelsToBokeh

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = PixelsToBokeh(renderer.float().eval()).to(device).eval()
    if device == "cuda":
        # fp32 means fp32: TF32 would change the reference numbers.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def render(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
            return out.cpu().numpy()

    def render_at(batch: np.ndarray, apertures: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
            out = module(image, torch.from_numpy(apertures).to(device))
            return out.cpu().numpy()

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    weights = tensor_bytes(module)
    return Candidate(
        name=REFERENCE_NAME,
        precision="fp32",
        config=renderer.config.to_dict(),
        source=source,
        device=name,
        render=render,
        clock=cuda_event_clock if device == "cuda" else wall_clock,
        is_reference=True,
        render_at=render_at,
        gpu_memory=allocator_peak(lambda: weights) if device == "cuda" else no_gpu_memory,
    )


# Faster PyTorch renders beside the fp32 reference: autocast to a 16-bit type with
# channels_last weights on CUDA (the layout cuDNN's fastest convolutions want), and the same
# captured as a CUDA graph per input shape (no per-layer launch cost). Name -> (dtype, graph).
TORCH_VARIANTS = {
    "pytorch-bf16-autocast": ("bf16", False),
    "pytorch-fp16-autocast": ("fp16", False),
    "pytorch-cudagraph-bf16": ("bf16", True),
}


def torch_variant(renderer: Any, source: str, name: str, device: str) -> Candidate:
    """The render of ``renderer`` as the ``TORCH_VARIANTS`` entry ``name`` on ``device``
    ("cuda" or "cpu"; CUDA graphs need "cuda"). Same uint8 I/O and timing as the reference;
    its precision ("bf16"/"fp16") is judged by the 16-bit parity threshold."""
    import torch

    from dbsi.benchmarks.timing import cuda_event_clock
    from dbsi.export.onnx_graph import PixelsToBokeh

    precision, graphed = TORCH_VARIANTS[name]
    if graphed and device != "cuda":
        raise ValueError(f"{name}: CUDA graphs need a CUDA device")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    module = PixelsToBokeh(renderer.float().eval()).to(device).eval()
    if device == "cuda":
        # Not on CPU: there torch 2.13's bf16 depthwise convolutions on channels_last data
        # took minutes for a 300x451 photo (2-core EPYC, measured); bokeh-bench adds these
        # variants only on CUDA.
        module = module.to(memory_format=torch.channels_last)

    # On CPU the 16-bit convolutions bypass oneDNN: its f16 depthwise kernel
    # (brdgmm_dw:avx10_1_512, torch 2.13) never returns for the blur's 21-tap rows on a
    # 40x60 image on Xeons with AVX512-FP16 (measured; ONEDNN_VERBOSE names the kernel).
    # ATen's own kernels are slower but finish.
    def without_onednn() -> contextlib.AbstractContextManager:
        if device != "cpu":
            return contextlib.nullcontext()
        return torch.backends.mkldnn.flags(enabled=False)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with without_onednn(), torch.inference_mode(), torch.autocast(device, dtype=dtype):
            return module(batch)

    render = CudaGraphRender(forward) if graphed else None
    weights = tensor_bytes(module)

    def held_bytes() -> int:
        return weights + (render.pool_bytes if render is not None else 0)

    def run(batch: np.ndarray) -> np.ndarray:
        if render is not None:
            return render(batch)
        return forward(torch.from_numpy(np.ascontiguousarray(batch)).to(device)).cpu().numpy()

    return Candidate(
        name=name,
        precision=precision,
        config=renderer.config.to_dict(),
        source=source,
        device=torch.cuda.get_device_name() if device == "cuda" else "CPU",
        render=run,
        clock=cuda_event_clock if device == "cuda" else wall_clock,
        gpu_memory=allocator_peak(held_bytes) if device == "cuda" else no_gpu_memory,
    )


class CudaGraphRender:
    """``forward`` captured once per input shape as a CUDA graph, then replayed: copy the batch
    into the graph's static input, replay, copy the static output back. Warm-up runs on a side
    stream before capture, as PyTorch's CUDA-graph notes ask; the graphs share one memory pool.
    Capture is ``thread_local``: the benchmark's memory sampler queries the device from another
    thread meanwhile, which the default ("global") mode forbids."""

    def __init__(self, forward: Callable[[Any], Any]) -> None:
        import torch

        self._forward = forward
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._pool = torch.cuda.graph_pool_handle()
        #: what the captured graphs keep allocated (static inputs, outputs, the pool)
        self.pool_bytes = 0

    def _capture(self, batch: np.ndarray) -> tuple[Any, Any, Any]:
        import torch

        static_in = torch.from_numpy(np.ascontiguousarray(batch)).to("cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if batch.shape not in self._graphs:
            before = torch.cuda.memory_allocated()
            self._graphs[batch.shape] = self._capture(batch)
            self.pool_bytes += torch.cuda.memory_allocated() - before
        graph, static_in, static_out = self._graphs[batch.shape]
        static_in.copy_(torch.from_numpy(np.ascontiguousarray(batch)))
        graph.replay()
        return static_out.cpu().numpy()
