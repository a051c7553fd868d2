"""PyTorch on a CUDA device: the renders bokeh-bench times (the fp32 reference, 16-bit
autocast with channels_last, the CUDA-graph replay), its CUDA-event clock and the per-row
device-memory figure. Each test skips with "no CUDA device" where torch sees none."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dbsi.export.checks import check_photos
from dbsi.export.parity import parity_failures, parity_stats
from tests.export_helpers import make_renderer
from tests.needs import needs_cuda

MiB = 2**20


@pytest.fixture(scope="module")
def renderer():
    # Half width, default network size and kernels: the real render path at a cost a test
    # can pay.
    return make_renderer(0.5)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return check_photos()["chelsea 300x451"][None]


def judged(reference: np.ndarray, candidate: np.ndarray, precision: str) -> list[str]:
    return parity_failures(parity_stats(reference, candidate), precision)


@needs_cuda
def test_the_fp32_render_on_cuda_matches_the_cpu_render(renderer, photo):
    from dbsi.benchmarks.torch_renders import torch_reference

    on_cpu = torch_reference(renderer, "test", "cpu").render(photo)
    on_cuda = torch_reference(renderer, "test", "cuda").render(photo)
    assert judged(on_cpu, on_cuda, "fp32") == []


@needs_cuda
@pytest.mark.parametrize("variant", ["pytorch-bf16-autocast", "pytorch-fp16-autocast"])
def test_16_bit_autocast_with_channels_last_passes_the_16_bit_threshold(renderer, photo, variant):
    from dbsi.benchmarks.torch_renders import TORCH_VARIANTS, torch_reference, torch_variant

    reference = torch_reference(renderer, "test", "cuda").render(photo)
    candidate = torch_variant(renderer, "test", variant, "cuda")
    assert judged(reference, candidate.render(photo), TORCH_VARIANTS[variant][0]) == []


@needs_cuda
def test_a_cuda_graph_replays_each_new_batch_as_the_eager_render_does(renderer, photo):
    from dbsi.benchmarks.torch_renders import torch_variant

    graphed = torch_variant(renderer, "test", "pytorch-cudagraph-bf16", "cuda")
    eager = torch_variant(renderer, "test", "pytorch-bf16-autocast", "cuda")
    other = np.ascontiguousarray(photo[:, ::-1])  # same shape: the captured graph is reused
    first, second = graphed.render(photo), graphed.render(other)
    assert not np.array_equal(first, second)
    assert judged(eager.render(photo), first, "bf16") == []
    assert judged(eager.render(other), second, "bf16") == []


@needs_cuda
def test_the_cuda_event_clock_times_work_queued_on_the_gpu_not_the_call():
    import torch

    from dbsi.benchmarks.timing import cuda_event_clock

    def queue_spin() -> None:
        torch.cuda._sleep(200_000_000)  # returns at once; the GPU spins for ~0.1 s

    torch.cuda.synchronize()
    start = time.perf_counter()
    queue_spin()
    queued = time.perf_counter() - start
    torch.cuda.synchronize()
    measured = cuda_event_clock(queue_spin)
    assert measured > 10 * queued and measured > 0.01


@needs_cuda
def test_the_memory_figure_counts_the_rows_own_allocations_not_earlier_ones():
    import torch

    from dbsi.benchmarks.torch_renders import allocator_peak

    held_elsewhere = torch.empty(512 * MiB, dtype=torch.uint8, device="cuda")
    with allocator_peak(lambda: 3 * MiB)() as figure:
        scratch = torch.ones(64 * MiB, dtype=torch.uint8, device="cuda")
        del scratch
    assert 67 * MiB <= figure.peak_bytes < 100 * MiB
    del held_elsewhere


@needs_cuda
def test_speed_rows_on_cuda_report_their_own_device_memory(tmp_path):
    from dbsi.benchmarks.candidates import ModelSet
    from dbsi.benchmarks.speed import run_speed
    from dbsi.benchmarks.torch_renders import torch_reference, torch_variant

    renderer = make_renderer(0.25)
    candidates = [
        torch_reference(renderer, "test", "cuda"),
        torch_variant(renderer, "test", "pytorch-cudagraph-bf16", "cuda"),
    ]
    models = ModelSet(candidates, [], random_weights=True, checkpoint=None)
    rows = run_speed(models, [(256, 384)], [1], repeats=2, warmup=1, with_codec=False)
    for row in rows:
        assert row["peak_gpu_memory_bytes"] > 0
        assert "allocator peak" in row["gpu_memory_measure"]
