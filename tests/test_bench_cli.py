"""bokeh-bench end to end on a tiny model: parity verdicts, report files, exit codes."""

import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dbsi.benchmarks.cli import main
from dbsi.benchmarks.models import cached_onnx
from dbsi.train import BokehConfig, BokehRenderer
from dbsi.train.checkpoint import save_checkpoint
from tests.conftest import real_photo

TINY = dict(width=0.125, net_long_side=128)
# What a CPU machine with the cpu extra measures: the PyTorch reference, ONNX Runtime's CPU
# provider and, when it is installed, OpenVINO.
EXPECTED_BACKENDS = ("pytorch-eager-fp32", "onnxruntime-cpu-fp32") + (
    ("openvino-fp32",) if importlib.util.find_spec("openvino") else ()
)


def tiny_renderer() -> BokehRenderer:
    torch.manual_seed(0)
    return BokehRenderer(BokehConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint, its ONNX export in a cache, and a copy with one weight perturbed."""
    root = tmp_path_factory.mktemp("bench")
    checkpoint = root / "tiny.pt"
    save_checkpoint(checkpoint, tiny_renderer())
    perturbed = tiny_renderer()
    head = perturbed.predictor[-2]
    with torch.no_grad():
        head.bias[0] += 3.0  # one number: the sharp map's logit
    save_checkpoint(root / "perturbed.pt", perturbed)
    cache = root / "cache"
    onnx_path = cached_onnx(checkpoint, cache, log=lambda _: None)
    return {
        "checkpoint": checkpoint,
        "perturbed": root / "perturbed.pt",
        "onnx": onnx_path,
        "cache": cache,
        "root": root,
    }


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_parity_passes_for_the_onnx_of_the_same_weights(tiny, tmp_path):
    result = invoke(
        "parity",
        "--model",
        tiny["checkpoint"],
        "--model",
        tiny["onnx"],
        "--out",
        tmp_path,
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "parity.json").read_text())
    pooled = [r for r in report["rows"] if r["photo"] == "all photos"]
    assert pooled and all(r["passed"] for r in pooled)
    assert report["real_photos"] is True


def test_parity_fails_when_one_reference_weight_is_perturbed(tiny, tmp_path):
    result = invoke(
        "parity",
        "--model",
        tiny["perturbed"],
        "--model",
        tiny["onnx"],
        "--out",
        tmp_path,
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 1, result.output
    assert "Parity FAILED for: onnxruntime-cpu-fp32" in result.output
    report = json.loads((tmp_path / "parity.json").read_text())
    pooled = next(r for r in report["rows"] if r["photo"] == "all photos")
    assert not pooled["passed"] and pooled["max_abs_error"] > 2


def test_speed_writes_json_with_every_raw_figure_and_the_machine(tiny, tmp_path):
    result = invoke(
        "speed",
        "--model",
        tiny["checkpoint"],
        "--size",
        "64x96",
        "--batch",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--out",
        tmp_path,
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["machine"]["cpu_model"] and "onnxruntime" in report["machine"]["libraries"]
    assert report["random_weights"] is False
    backends = {(r["backend"], r["io"]) for r in report["rows"]}
    assert backends == {(b, io) for b in EXPECTED_BACKENDS for io in ("model", "decode+encode")}
    for row in report["rows"]:
        assert len(row["samples_s"]) == 2 and row["batch"] == 2
        for key in (
            "median_s",
            "p90_s",
            "p99_s",
            "images_per_s",
            "flops_per_image",
            "achieved_gflop_per_s",
            "speedup_vs_reference",
            "peak_host_rss_bytes",
        ):
            assert isinstance(row[key], (int, float)) and row[key] > 0, key
        assert row["reference_backend"] == "pytorch-eager-fp32"
    reference_rows = [r for r in report["rows"] if r["is_reference"]]
    assert all(r["speedup_vs_reference"] == 1.0 for r in reference_rows)


def test_speed_markdown_has_one_table_line_per_row(tiny, tmp_path):
    invoke(
        "speed",
        "--model",
        tiny["checkpoint"],
        "--size",
        "64x96",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--no-codec",
        "--out",
        tmp_path,
        "--cache",
        tiny["cache"],
    )
    lines = (tmp_path / "speed.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| backend | device | size")
    assert len(table) == 2 + len(EXPECTED_BACKENDS)  # header, rule, one row per backend


def test_scaling_writes_a_png_of_the_curves(tiny, tmp_path):
    result = invoke(
        "scaling",
        "--model",
        tiny["onnx"],
        "--size",
        "64x96",
        "--size",
        "96x128",
        "--batch",
        "1",
        "--batch",
        "2",
        "--batch-size",
        "64x96",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--out",
        tmp_path,
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 0, result.output
    png = tmp_path / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100
    report = json.loads((tmp_path / "scaling.json").read_text())
    sweeps = sorted((r["sweep"], r["size"], r["batch"]) for r in report["rows"])
    runtimes = len(EXPECTED_BACKENDS) - 1  # every runtime backend here, no PyTorch reference
    assert sweeps == sorted(
        [("batch", "64x96", 1), ("batch", "64x96", 2)] * runtimes
        + [("resolution", "64x96", 1), ("resolution", "96x128", 1)] * runtimes
    )
    assert all(r["ms_per_megapixel"] > 0 for r in report["rows"])


def test_profile_sums_every_cpu_runtimes_layers_by_kind_and_kernel(tiny, tmp_path):
    result = invoke(
        "profile", "--model", tiny["onnx"], "--size", "64x96", "--repeats", "1", "--warmup", "0",
        "--out", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "profile.json").read_text())
    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    assert sorted(p["backend"] for p in report["profiles"]) == sorted(backends)
    for backend in backends:
        rows = [r for r in report["rows"] if r["backend"] == backend]
        assert sum(r["share_pct"] for r in rows) == pytest.approx(100)
        # Every one of the predictor's convolutions (and the blur's) ran somewhere.
        assert sum(r["layers"] for r in rows if "Conv" in r["kind"]) >= 10
        profile = next(p for p in report["profiles"] if p["backend"] == backend)
        assert profile["total_ms"] == pytest.approx(sum(r["ms"] for r in rows))
        assert profile["slowest"][0]["ms"] == max(r["ms"] for r in profile["slowest"])


def test_profile_takes_only_onnx_graphs(tiny, tmp_path):
    result = invoke("profile", "--model", tiny["checkpoint"], "--out", tmp_path)
    assert result.exit_code == 2
    assert "profile takes ONNX graphs (.onnx), not .pt" in result.output


def test_an_onnxruntime_trace_counts_only_its_last_runs():
    from dbsi.benchmarks.layer_profile import trace_layers

    def node(name, op, ts, dur):
        args = {"op_name": op, "provider": "CPUExecutionProvider"}
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": args}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        node("conv1", "Conv", 10, 90),  # the warm-up run
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("conv1", "Conv", 210, 30),
        {"cat": "Node", "name": "conv1_fence_before", "ts": 205, "dur": 1, "args": {}},
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100},
        node("conv1", "Conv", 410, 50),
    ]
    (layer,) = trace_layers(events, repeats=2)
    assert (layer.name, layer.kind, layer.kernel) == ("conv1", "Conv", "CPU")
    assert layer.ms == pytest.approx(0.040)


def write_pairs(root, count=2):
    for sub in ("original", "bokeh"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "original" / f"{i}.png"), image)
        cv2.imwrite(str(root / "bokeh" / f"{i}.png"), cv2.GaussianBlur(image, (9, 9), 0))


def test_quality_reports_model_in_both_modes_and_baselines(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    write_pairs(tmp_path / "data")
    result = invoke(
        "quality",
        tmp_path / "data",
        "--model",
        tiny["checkpoint"],
        "--out",
        tmp_path / "out",
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "quality.json").read_text())
    methods = {(r["method"], r["mode"]) for r in report["rows"]}
    assert methods == {
        ("identity", "-"),
        ("gaussian-blur-75", "-"),
        ("model (pytorch-eager-fp32)", "paper"),
        ("model (pytorch-eager-fp32)", "fullres"),
    }
    for row in report["rows"]:
        assert row["pairs"] == 2 and row["failed"] == 0
        assert row["lpips"] is None
    paper, fullres = (
        next(r for r in report["rows"] if r["mode"] == m) for m in ("paper", "fullres")
    )
    assert paper["psnr_db"] != fullres["psnr_db"]


def test_quality_says_lpips_is_unavailable_once_per_command(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    write_pairs(tmp_path / "data")
    result = invoke(
        "quality", tmp_path / "data", "--model", tiny["onnx"],
        "--out", tmp_path / "out", "--cache", tiny["cache"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("unavailable") == 1, result.output
    markdown = (tmp_path / "out" / "quality.md").read_text()
    assert markdown.count("unavailable") == 1, markdown
    report = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert report["lpips"].startswith("unavailable")
    assert len(report["rows"]) >= 3 and all(r["lpips"] is None for r in report["rows"])
    assert all("lpips_status" not in r for r in report["rows"])


def test_quality_sheet_draws_a_row_per_pair_and_the_photos_below(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    write_pairs(tmp_path / "data", count=3)
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "cat.jpg"), np.ascontiguousarray(real_photo("chelsea")[..., ::-1]))
    sheets = {}
    for rows in (1, 3):
        sheet = tmp_path / f"sheet-{rows}.png"
        result = invoke(
            "quality", tmp_path / "data", "--model", tiny["checkpoint"], "--out", tmp_path / "out",
            "--cache", tiny["cache"], "--sheet", sheet, "--sheet-pairs", rows,
            "--sheet-photos", photos,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"Contact sheet: {sheet}" in result.output
        sheets[rows] = cv2.imread(str(sheet))
        assert sheets[rows] is not None and sheets[rows].std() > 10  # a picture, not a blank
    # One column per picture kind, the same in both; each added pair row makes it taller.
    assert sheets[3].shape[1] == sheets[1].shape[1]
    assert sheets[3].shape[0] > sheets[1].shape[0] + 100


def test_quality_sheet_photos_without_a_sheet_is_bad_usage(tiny, tmp_path):
    write_pairs(tmp_path / "data")
    result = invoke(
        "quality", tmp_path / "data", "--model", tiny["checkpoint"], "--out", tmp_path / "out",
        "--sheet-photos", tmp_path / "data",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--sheet-photos" in result.output and "--sheet" in result.output


def test_quality_scores_each_aperture_asked_for_beside_the_model_as_trained(tiny, tmp_path):
    write_pairs(tmp_path / "data")
    result = invoke(
        "quality", tmp_path / "data", "--model", tiny["checkpoint"], "--model", tiny["onnx"],
        "--out", tmp_path / "out", "--cache", tiny["cache"], "--aperture", 0, "--aperture", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "quality.json").read_text())["rows"]
    by_key = {(r["method"], r["mode"]): r for r in rows}
    reference = "model (pytorch-eager-fp32)"
    for mode in ("paper", "fullres"):
        assert {(reference, mode), (reference, f"{mode} a=0"), (reference, f"{mode} a=2")} <= set(
            by_key
        )
    assert ("model (onnxruntime-cpu-fp32)", f"{tiny_renderer().config.mode} a=2") in by_key
    # Aperture 0 in fullres returns the photo (within a level): it scores as the identity does.
    identity = by_key["identity", "-"]["psnr_db"]
    assert by_key[reference, "fullres a=0"]["psnr_db"] == pytest.approx(identity, abs=0.2)
    assert by_key[reference, "fullres a=2"]["psnr_db"] != by_key[reference, "fullres"]["psnr_db"]


def test_quality_skips_an_unreadable_pair_counts_it_and_exits_1(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    write_pairs(tmp_path / "data")
    (tmp_path / "data" / "original" / "1.png").write_bytes(b"not an image")
    result = invoke(
        "quality",
        tmp_path / "data",
        "--model",
        tiny["onnx"],
        "--out",
        tmp_path / "out",
        "--cache",
        tiny["cache"],
    )
    assert result.exit_code == 1
    assert "1.png: not a decodable image" in result.output
    report = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert all(r["pairs"] == 1 and r["failed"] == 1 for r in report["rows"])


def test_quality_with_a_split_file_scores_only_its_val_pairs(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    write_pairs(tmp_path / "data", count=3)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["0", "1"], "val": ["2"]}))
    result = invoke(
        "quality", tmp_path / "data", "--split-file", split, "--model", tiny["onnx"],
        "--out", tmp_path / "out", "--cache", tiny["cache"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert {r["pair"] for r in report["per_pair"]} == {"2"}
    assert all(r["pairs"] == 1 for r in report["rows"])
    assert str(split) in report["data"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["speed", "--model", "/no/such/model.onnx"], "/no/such/model.onnx: no such model file"),
        (["speed", "--size", "1024by1536"], "is not HEIGHTxWIDTH"),
        (["quality", "/no/such/folder"], "/no/such/folder: no such data folder"),
        (["profile", "--model", "/no/such/model.onnx"], "/no/such/model.onnx: no such ONNX file"),
    ],
)
def test_bad_usage_exits_2_with_a_one_line_reason(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_model_type_exits_2(tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("hello")
    result = CliRunner().invoke(main, ["speed", "--model", str(model), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown model type '.txt'" in result.output


def test_parity_without_a_checkpoint_exits_2(tiny, tmp_path):
    result = invoke("parity", "--model", tiny["onnx"], "--out", tmp_path)
    assert result.exit_code == 2
    assert "parity needs the PyTorch reference" in result.output


def test_the_onnx_cache_key_changes_with_toolkit_opset_and_checkpoint(monkeypatch):
    from dbsi.benchmarks import models
    from dbsi.export import onnx_graph
    from dbsi.runtime import provenance

    key = models.onnx_cache_key("ab" * 32)
    assert models.onnx_cache_key("ab" * 32) == key
    assert models.onnx_cache_key("cd" * 32) != key
    monkeypatch.setattr(onnx_graph, "OPSET", onnx_graph.OPSET + 1)
    assert models.onnx_cache_key("ab" * 32) != key
    monkeypatch.undo()
    monkeypatch.setattr(provenance, "toolkit_version", lambda: "99.0")
    assert models.onnx_cache_key("ab" * 32) != key


def test_the_random_checkpoint_is_remade_when_its_config_or_toolkit_changes(tmp_path, monkeypatch):
    from dbsi.benchmarks import models
    from dbsi.runtime import provenance
    from dbsi.train.checkpoint import read_checkpoint

    first = models.random_checkpoint(tmp_path, width=0.125)
    assert models.random_checkpoint(tmp_path, width=0.125) == first
    assert read_checkpoint(first)["config"] == BokehConfig(width=0.125).to_dict()
    assert models.random_checkpoint(tmp_path, width=0.25) != first
    monkeypatch.setattr(provenance, "toolkit_version", lambda: "99.0")
    assert models.random_checkpoint(tmp_path, width=0.125) != first


def test_a_16_bit_autocast_variant_renders_close_to_the_fp32_reference():
    # fp16 autocast on CPU here (bf16 convolutions on this CPU take minutes); on a CUDA GPU
    # bokeh-bench adds both, with channels_last, and a CUDA-graph replay beside the reference.
    from dbsi.benchmarks.torch_renders import torch_reference, torch_variant
    from dbsi.export.parity import parity_failures, parity_stats
    from tests.conftest import real_photo

    photo = np.ascontiguousarray(real_photo("chelsea")[None, :, :, ::-1])
    reference = torch_reference(tiny_renderer(), "tiny", device="cpu")
    variant = torch_variant(tiny_renderer(), "tiny", "pytorch-fp16-autocast", "cpu")
    stats = parity_stats(reference.render(photo), variant.render(photo))
    assert variant.precision == "fp16"
    assert parity_failures(stats, "fp16") == [], stats


def test_cuda_graph_variant_needs_a_cuda_device():
    from dbsi.benchmarks.torch_renders import torch_variant

    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        torch_variant(tiny_renderer(), "tiny", "pytorch-cudagraph-bf16", "cpu")


def test_speed_pytorch_only_times_the_reference_without_exporting(tiny, tmp_path):
    cache = tmp_path / "cache"
    result = invoke(
        "speed",
        "--model",
        tiny["checkpoint"],
        "--pytorch-only",
        "--size",
        "64x96",
        "--no-codec",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--out",
        tmp_path,
        "--cache",
        cache,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["pytorch-eager-fp32"]
    assert not cache.exists()
