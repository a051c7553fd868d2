"""bokeh-bench statistics: percentiles, throughput, warm-up exclusion, memory sampling."""

import numpy as np
import pytest

from dbsi.benchmarks.timing import LatencyStats, PeakMemory, measure, percentile


def test_percentile_interpolates_linearly_between_ranks():
    samples = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(samples, 50) == pytest.approx(5.5)
    assert percentile(samples, 90) == pytest.approx(9.1)  # rank 0.9 * 9 = 8.1
    assert percentile(samples, 99) == pytest.approx(9.91)


def test_percentile_ignores_sample_order():
    rng = np.random.default_rng(0)
    samples = list(rng.random(37))
    shuffled = list(rng.permutation(samples))
    assert percentile(samples, 90) == percentile(shuffled, 90)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_throughput_counts_every_image_of_every_call():
    stats = LatencyStats((0.5, 0.25, 0.25), batch=4)
    assert stats.throughput == pytest.approx(4 * 3 / 1.0)
    assert stats.median == 0.25
    assert stats.to_dict()["images_per_s"] == pytest.approx(12.0)


def test_stats_reject_an_empty_run_or_a_zero_batch():
    with pytest.raises(ValueError):
        LatencyStats((), batch=1)
    with pytest.raises(ValueError):
        LatencyStats((1.0,), batch=0)


def test_warm_up_calls_run_but_are_not_measured():
    calls = []

    # A clock that reports the index of the call it timed: warm-up calls must not appear.
    def clock(fn):
        fn()
        return float(len(calls))

    stats = measure(lambda: calls.append(1), batch=1, repeats=3, warmup=2, clock=clock)
    assert len(calls) == 5
    assert stats.samples == (3.0, 4.0, 5.0)


def test_peak_memory_sees_an_allocation_made_inside_the_block():
    with PeakMemory(interval=0.001) as before:
        pass
    with PeakMemory(interval=0.001) as during:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        block.sum()
    assert during.peak_rss >= before.peak_rss + 32 * 2**20
    del block


def test_speed_rows_each_have_their_own_memory_peak(monkeypatch):
    """The codec run's allocations must not show up in the model row's peak."""
    from dbsi.benchmarks import speed
    from dbsi.benchmarks.candidates import Candidate, ModelSet
    from dbsi.train.config import BokehConfig

    codec_run = speed.file_to_file

    def file_to_file_with_a_big_buffer(candidate, jpegs):
        buffer = np.ones(256 * 2**20, dtype=np.uint8)  # 256 MiB, touched, freed on return
        buffer.sum()
        return codec_run(candidate, jpegs)

    monkeypatch.setattr(speed, "file_to_file", file_to_file_with_a_big_buffer)
    numpy_copy = Candidate(
        name="numpy-copy",
        precision="fp32",
        config=BokehConfig(width=0.125).to_dict(),
        source="test",
        device="CPU",
        render=lambda batch: batch.copy(),
    )
    rows = speed.run_speed(ModelSet([numpy_copy], [], False, None), [(64, 96)], [1],
                           repeats=2, warmup=0)  # fmt: skip
    model, codec = rows
    assert (model["io"], codec["io"]) == (speed.IO_MODEL, speed.IO_CODEC)
    assert codec["peak_host_rss_bytes"] >= model["peak_host_rss_bytes"] + 128 * 2**20


def test_a_backend_that_needs_more_warm_up_gets_it_before_the_measured_calls():
    from dbsi.benchmarks import speed
    from dbsi.benchmarks.candidates import Candidate
    from dbsi.train.config import BokehConfig

    calls = []
    slow_second_call = Candidate(
        name="compiles-on-second-call",
        precision="fp32",
        config=BokehConfig(width=0.125).to_dict(),
        source="test",
        device="CPU",
        render=lambda batch: calls.append(len(calls)) or batch,
        warmup_calls=2,
    )
    images = np.zeros((1, 8, 8, 3), np.uint8)
    stats, _ = speed.measure_model(slow_second_call, images, repeats=3, warmup=1, progress=None)
    assert len(calls) == 2 + 3  # the two it needs, then the three measured
    assert len(stats.samples) == 3


def test_speed_runs_one_backend_at_a_time_and_releases_it_before_the_next():
    """A backend keeps the buffers of the largest picture it ran; held together at 4K, eight
    of them exhausted a 24 GiB machine. Rows still come grouped by size."""
    from dbsi.benchmarks import speed
    from dbsi.benchmarks.candidates import Candidate, ModelSet
    from dbsi.train.config import BokehConfig

    events = []

    def candidate(name):
        def render(batch):
            events.append(f"{name} renders {batch.shape[1]}")
            return batch

        return Candidate(
            name=name,
            precision="fp32",
            config=BokehConfig(width=0.125).to_dict(),
            source="test",
            device="CPU",
            render=render,
            close=lambda: events.append(f"{name} closed"),
        )

    models = ModelSet([candidate("a"), candidate("b")], [], False, None)
    rows = speed.run_speed(models, [(64, 96), (32, 48)], [1], repeats=1, warmup=0,
                           with_codec=False)  # fmt: skip
    assert events.index("a closed") < events.index("b renders 64")
    assert events.index("a renders 32") < events.index("a closed")
    assert [(r["backend"], r["size"]) for r in rows] == [
        ("a", "64x96"), ("b", "64x96"), ("a", "32x48"), ("b", "32x48")
    ]  # fmt: skip
