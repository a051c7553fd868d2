"""The dbsi.* metadata_props of an exported ONNX (docs/ARTEFACTS.md)."""

import json

import onnx
import pytest

from dbsi.export.metadata import model_metadata, read_metadata, set_metadata
from dbsi.runtime.contract import REQUIRED_KEYS, GraphMetadata
from dbsi.runtime.errors import MetadataError
from dbsi.train.config import BokehConfig
from tests.export_helpers import foreign_onnx


def metadata_for(config=None, precision="fp32"):
    config = config or BokehConfig()
    return GraphMetadata(
        config=config.to_dict(),
        min_input_side=config.min_input_side,
        max_input_side=8192,
        outputs=["bokeh"],
        precision=precision,
        checkpoint_sha256="ab" * 32,
        toolkit_version="0.1.0",
    )


def write_props(model, props):
    """metadata_props exactly as given, for metadata a bokeh-export would never write."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def test_metadata_has_every_key_of_the_contract_as_strings():
    props = metadata_for().to_props()
    assert set(props) == {*REQUIRED_KEYS, "dbsi.inputs"}
    assert all(isinstance(v, str) for v in props.values())
    assert props["dbsi.layout"] == "NHWC"
    assert props["dbsi.color_order"] == "BGR"
    assert props["dbsi.input_dtype"] == "uint8"
    assert props["dbsi.min_input_side"] == "38"
    assert json.loads(props["dbsi.outputs"]) == ["bokeh"]


def test_render_config_round_trips_through_the_metadata():
    config = BokehConfig(kernel_sizes=(5, 25, 45), net_long_side=512, mode="paper", width=0.5)
    props = metadata_for(config).to_props()
    assert BokehConfig.from_dict(GraphMetadata.from_props(props, "m.onnx").config) == config


def test_written_metadata_reads_back_from_the_file(tmp_path):
    path = foreign_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    set_metadata(model, metadata_for())
    onnx.save(model, str(path))
    assert read_metadata(path) == metadata_for()


def test_set_metadata_replaces_dbsi_entries_and_keeps_others(tmp_path):
    model = onnx.load(str(foreign_onnx(tmp_path / "m.onnx")))
    entry = model.metadata_props.add()
    entry.key, entry.value = "producer.note", "kept"
    set_metadata(model, metadata_for())
    set_metadata(model, metadata_for(precision="fp16"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["producer.note"] == "kept"
    assert props["dbsi.precision"] == "fp16"
    assert len(model.metadata_props) == len(REQUIRED_KEYS) + len(["dbsi.inputs", "producer.note"])


def test_onnx_without_our_metadata_is_refused_naming_the_file(tmp_path):
    path = foreign_onnx(tmp_path / "other.onnx")
    with pytest.raises(ValueError, match=r"other\.onnx: not a DBSI model"):
        read_metadata(path)


def test_other_metadata_format_versions_are_refused():
    model = onnx.ModelProto()
    write_props(model, {**metadata_for().to_props(), "dbsi.format_version": "2"})
    with pytest.raises(ValueError, match="format version 2 is not supported"):
        model_metadata(model, "m.onnx")


def test_metadata_missing_a_key_is_refused():
    model = onnx.ModelProto()
    props = metadata_for().to_props()
    del props["dbsi.min_input_side"]
    write_props(model, props)
    with pytest.raises(ValueError, match="lacks dbsi.min_input_side"):
        model_metadata(model, "m.onnx")


def test_a_file_that_is_not_onnx_is_refused_naming_it(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is a JPEG, not a protobuf")
    with pytest.raises(ValueError, match="photo.onnx"):
        read_metadata(path)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        metadata_for(precision="int8")


def test_the_exporter_refuses_metadata_with_the_runtimes_check():
    model = onnx.ModelProto()
    write_props(model, {**metadata_for().to_props(), "dbsi.layout": "NCHW"})
    with pytest.raises(MetadataError, match="m.onnx: dbsi.layout is 'NCHW'"):
        model_metadata(model, "m.onnx")


def test_metadata_without_the_inputs_entry_reads_as_one_image_input():
    props = metadata_for().to_props()
    del props["dbsi.inputs"]
    assert GraphMetadata.from_props(props, "old.onnx").inputs == ("image",)


def test_unknown_inputs_are_refused_naming_the_file():
    props = {**metadata_for().to_props(), "dbsi.inputs": '["image", "depth"]'}
    with pytest.raises(MetadataError, match="old.onnx: inputs"):
        GraphMetadata.from_props(props, "old.onnx")
