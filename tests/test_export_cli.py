"""bokeh-export on bad input: one clear line naming the file, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dbsi.export.cli import main
from dbsi.runtime.contract import GraphMetadata
from tests.export_helpers import DATA, foreign_onnx, make_checkpoint


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def assert_nothing_written(folder, *keep):
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


@pytest.fixture
def tiny_payload(tmp_path):
    path = make_checkpoint(tmp_path / "source.pt", width=0.125)
    payload = torch.load(path, weights_only=True)
    path.unlink()
    return payload


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    assert_refused(invoke("onnx", bad, "-o", tmp_path / "m.onnx"), str(bad), "not a PyTorch")
    assert_nothing_written(tmp_path, "notes.pt")


def test_a_missing_checkpoint_is_refused(tmp_path):
    assert_refused(invoke("onnx", tmp_path / "nope.pt", "-o", tmp_path / "m.onnx"), "nope.pt")
    assert_nothing_written(tmp_path)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    megadepth = DATA / "megadepth_original_format.pth"
    result = invoke("onnx", megadepth, "-o", tmp_path / "m.onnx")
    assert_refused(result, str(megadepth), "not a DBSI checkpoint")
    assert_nothing_written(tmp_path)


def test_a_checkpoint_of_another_config_version_is_refused(tmp_path, tiny_payload):
    tiny_payload["config"]["config_version"] = 2
    path = tmp_path / "future.pt"
    torch.save(tiny_payload, path)
    assert_refused(invoke("onnx", path, "-o", tmp_path / "m.onnx"), str(path), "config_version")
    assert_nothing_written(tmp_path, "future.pt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, tiny_payload):
    tiny_payload["config"]["width"] = 0.25
    path = tmp_path / "mixed.pt"
    torch.save(tiny_payload, path)
    assert_refused(invoke("onnx", path, "-o", tmp_path / "m.onnx"), str(path), "do not fit")
    assert_nothing_written(tmp_path, "mixed.pt")


def test_bad_input_leaves_an_existing_output_untouched(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    output = tmp_path / "m.onnx"
    output.write_bytes(b"earlier export")
    assert invoke("onnx", bad, "-o", output).exit_code == 2
    assert output.read_bytes() == b"earlier export"
    assert_nothing_written(tmp_path, "bad.pt", "m.onnx")


@pytest.mark.parametrize("command", ["check", "info"])
def test_an_onnx_without_our_metadata_is_refused(tmp_path, command):
    path = foreign_onnx(tmp_path / "other.onnx")
    assert_refused(invoke(command, path), str(path), "not a DBSI model")


def test_engine_from_an_onnx_without_our_metadata_is_refused(tmp_path):
    path = foreign_onnx(tmp_path / "other.onnx")
    assert_refused(invoke("engine", path, "-o", tmp_path / "m.engine"), "not a DBSI model")
    assert_nothing_written(tmp_path, "other.onnx")


def test_info_on_an_engine_without_sidecar_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    assert_refused(invoke("info", engine), "no sidecar m.engine.json")


def test_info_prints_an_engine_sidecar(tmp_path):
    sidecar = {
        "format": "dbsi-engine-sidecar",
        "format_version": 1,
        "tensorrt_version": "10.14.1",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "profile": {"min": [1, 38, 38, 3], "opt": [1, 1024, 1536, 3], "max": [4, 2048, 2048, 3]},
        "version_compatible": False,
        "engine_sha256": "0" * 64,
        "onnx_metadata": GraphMetadata(
            config={"kernel_sizes": [25, 45, 75]},
            min_input_side=38,
            max_input_side=8192,
            outputs=["bokeh"],
            precision="fp16",
            checkpoint_sha256="0" * 64,
            toolkit_version="test",
        ).to_props(),
    }
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    result = invoke("info", tmp_path / "m.engine")
    assert result.exit_code == 0
    assert "NVIDIA H100 80GB HBM3" in result.output
    assert "[1, 1024, 1536, 3]" in result.output


def test_info_refuses_a_json_that_is_not_a_sidecar(tmp_path):
    path = tmp_path / "m.engine.json"
    path.write_text('{"format": "something-else"}')
    assert_refused(invoke("info", path), "not a DBSI engine sidecar")


@pytest.mark.parametrize("command", [[], ["onnx"], ["check"], ["engine"], ["info"]])
def test_every_command_explains_itself(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
