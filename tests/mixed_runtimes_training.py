"""Reproducer: torch training with DataLoader workers in a process where OpenVINO and ONNX Runtime
have compiled and run models, as a full test run (or a notebook) mixes them.

What it does, in one process:
1. OpenVINO compiles a small convolution graph in f32 (and runs it) and in bf16 (compile only:
   bf16 inference takes minutes on CPUs without AMX); ONNX Runtime runs it on a 4-thread pool.
   Their threads now exist (TBB's, ONNX Runtime's pool) and torch's OpenMP pool does too.
2. Those objects are left in a reference cycle, unreachable, as a test suite leaves them in
   tracebacks and fixtures until a full garbage collection.
3. Torch trains a small net for a few steps on batches from a DataLoader whose 2 workers start
   as bokeh-train starts them (``dbsi.train.data.worker_context``); each worker runs a full
   garbage collection first, standing in for the one a worker can run at any time.
4. bokeh-train itself trains the tiny preset for one epoch with a worker, in the same process.

Exit 0 and "trained" printed: the mix survived. With ``--start-method fork`` (the platform
default before the fix) step 3's workers inherit the runtimes' objects without their threads:
freeing the ONNX Runtime session kills a worker with SIGSEGV in pthread_join, freeing the
OpenVINO model hangs a worker in TBB (docs/DESIGN.md section 6).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch.utils.data import DataLoader, Dataset

from dbsi.train.cli import main as train_main
from dbsi.train.data import worker_context


def conv_graph() -> bytes:
    """Conv-ReLU-Conv on a 1x3xHxW float input: enough for both runtimes to build kernels."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (3, 8, 3, 3)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    io = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, "h", "w"])
        for name in ("x", "y")
    ]
    graph = helper.make_graph(nodes, "conv", io[:1], io[1:], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def runtimes_in_a_cycle() -> None:
    """Compile and run the graph on both runtimes, then drop them into unreachable garbage."""
    import onnxruntime as ort
    import openvino as ov

    graph = conv_graph()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype(np.float32)
    core = ov.Core()
    model = core.read_model(graph, b"")
    hint = {"PERFORMANCE_HINT": "LATENCY"}
    f32 = core.compile_model(model, "CPU", {**hint, "INFERENCE_PRECISION_HINT": "f32"})
    request = f32.create_infer_request()
    request.infer([x])
    bf16 = core.compile_model(model, "CPU", {**hint, "INFERENCE_PRECISION_HINT": "bf16"})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 4  # pool threads beside the caller's, on any core count
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})
    cycle: dict[str, object] = {"objects": (core, f32, request, bf16, session)}
    cycle["self"] = cycle
    print("runtimes: openvino f32 and bf16, onnxruntime, left in a reference cycle", flush=True)


class Collecting(Dataset):
    """Random pairs; the first item a worker makes runs a full garbage collection."""

    def __init__(self) -> None:
        self.collected = False

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.collected:
            gc.collect()
            self.collected = True
        generator = torch.Generator().manual_seed(index)
        shape = (3, 32, 48)
        return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def train_with_workers(context: object) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    # A timeout, so that a hung worker fails the run instead of hanging it.
    loader = DataLoader(
        Collecting(), batch_size=4, num_workers=2, multiprocessing_context=context, timeout=120
    )
    for original, target in loader:
        loss = torch.nn.functional.l1_loss(net(original), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained: {len(loader)} steps with 2 workers", flush=True)


def bokeh_train_epoch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / "run"
        runner = CliRunner()
        made = runner.invoke(train_main, ["synth", "--out", str(data), "--count", "12"])
        assert made.exit_code == 0, made.output
        args = ["run", "phase1", "--preset", "tiny", "--data", str(data),
                "--out", str(run), "--epochs", "1", "--workers", "1", "--no-progress"]  # fmt: skip
        trained = runner.invoke(train_main, args)
        assert trained.exit_code == 0, trained.output
    print("trained: bokeh-train phase1, 1 epoch, 1 worker", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start-method", choices=["bokeh-train", "fork"], default="bokeh-train")
    parser.add_argument("--skip-bokeh-train", action="store_true")
    args = parser.parse_args()
    # No collection in this process until the workers exist: the garbage must still be there
    # when they start, as it is by chance in a test run.
    gc.disable()
    runtimes_in_a_cycle()
    context = worker_context() if args.start_method == "bokeh-train" else "fork"
    name = context if isinstance(context, str) else context.get_start_method()
    print(f"worker start method: {name}", flush=True)
    train_with_workers(context)
    gc.enable()
    if not args.skip_bokeh_train:
        bokeh_train_epoch()
    return 0


# The guard is needed: forkserver and spawn workers import the main module.
if __name__ == "__main__":
    sys.exit(main())
