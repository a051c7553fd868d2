"""What ``bokeh-bench`` reports: the CPU's vector ISA read from /proc/cpuinfo's flags, the 4K
size, and which backend ``bokeh-run --backend auto`` picks for each model measured."""

from __future__ import annotations

import sys

import pytest

from dbsi.benchmarks.machine import cpu_isa, describe
from dbsi.benchmarks.speed import parse_size

BASE = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology cpuid pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx "
    "smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves"
)
AVX512 = "avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi avx512_vbmi2"


def cpuinfo(model: str, flags: str) -> str:
    """Two processors' worth of /proc/cpuinfo, as Linux prints it."""
    block = (
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
        f"flags\t\t: {BASE} {flags}\nbugs\t\t: spectre_v1\n\n"
    )
    return block + block.replace("processor\t: 0", "processor\t: 1")


def test_an_amx_xeon_reports_amx_as_its_int8_path():
    text = cpuinfo(
        "Intel(R) Xeon(R) Platinum 8480+",
        f"{AVX512} avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_bf16 amx_tile amx_int8",
    )
    assert cpu_isa(text) == {
        "int8": "AMX",
        "features": [
            "AMX-INT8",
            "AMX-BF16",
            "AVX-512 VNNI",
            "AVX-512 BF16",
            "AVX-512 FP16",
            "AVX-VNNI",
            "AVX-512",
            "AVX2",
        ],
    }


def test_an_epyc_with_avx512_vnni_reports_vnni_and_no_amx():
    text = cpuinfo("AMD EPYC 9R14 96-Core Processor", f"{AVX512} avx512_vnni avx512_bf16")
    assert cpu_isa(text) == {
        "int8": "AVX-512 VNNI",
        "features": ["AVX-512 VNNI", "AVX-512 BF16", "AVX-512", "AVX2"],
    }


def test_an_avx2_only_cpu_says_so():
    text = cpuinfo("AMD EPYC 7R32", "")
    assert cpu_isa(text) == {"int8": "AVX2 only", "features": ["AVX2"]}


def test_amx_tile_alone_is_not_an_int8_path():
    text = cpuinfo("a hypervisor that shows the tile but not the int8 unit", "amx_tile")
    assert cpu_isa(text)["int8"] == "AVX2 only"


def test_no_flags_line_is_unknown():
    assert cpu_isa("processor\t: 0\nFeatures\t: fp asimd\n") == {"int8": "unknown", "features": []}


def test_the_console_line_names_the_int8_path():
    info = {
        "cpu_model": "AMD EPYC 7R32",
        "cpu_count": 2,
        "ram_bytes": 8 * 2**30,
        "cpu_isa": cpu_isa(cpuinfo("AMD EPYC 7R32", "")),
        "gpus": [],
        "libraries": {},
    }
    assert describe(info).startswith(
        "AMD EPYC 7R32 (2 cores, 8 GiB RAM; int8 path AVX2 only: AVX2)"
    )


@pytest.mark.parametrize("text", ["4k", "4K", "2160x3840"])
def test_4k_is_2160_by_3840(text):
    assert parse_size(text) == (2160, 3840)


def test_the_speed_notes_say_which_backend_auto_runs_each_model_on(monkeypatch):
    from types import SimpleNamespace

    from dbsi.benchmarks.speed import auto_choices
    from dbsi.runtime import registry

    monkeypatch.setattr(registry, "nvidia_gpu", lambda: None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    sources = ["best.pt", "m.onnx", "m.onnx", "m.engine"]
    models = SimpleNamespace(candidates=[SimpleNamespace(source=s) for s in sources])
    assert auto_choices(models) == [
        "bokeh-run --backend auto runs m.onnx on onnxruntime here (auto: no NVIDIA GPU, OpenVINO "
        "not installed; --backend openvino to override)",
        "bokeh-run --backend auto runs m.engine on tensorrt here (auto: .engine file)",
    ]
