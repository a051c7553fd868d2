"""MegaDepth's hourglass (Li & Snavely 2018; Chen et al. 2016), key for key with the published
weights.

The published model is a flat ``nn.Sequential`` converted from Torch7: conv 7x7, BN, ReLU, the
hourglass ("Channels4"), and a final 3x3 conv. Module indices below reproduce its state-dict
keys exactly, which is why containers are indexed rather than named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# Inception configs: [[c0], [k1, r1, o1], [k2, r2, o2], [k3, r3, o3]] (docs/DESIGN.md section 1):
# a 1x1 branch of c0 channels and three branches of a 1x1 conv down to r channels then a k x k
# conv to o. Named INCEPTION_<output channels>_K<kernel sizes>_R<reduced channels>. The paper
# (Chen et al. 2016) and the original code call them by letters:
#   A, H  INCEPTION_256_K357_R32   (the original lists H apart from A with the same numbers)
#   B     INCEPTION_128_K357_R32
#   C     INCEPTION_128_K3711_R64
#   D     INCEPTION_128_K357_R64
#   E     INCEPTION_64_K3711_R32
#   F     INCEPTION_256_K3711_R64
#   G     INCEPTION_64_K3711_R64
INCEPTION_256_K357_R32 = [[64], [3, 32, 64], [5, 32, 64], [7, 32, 64]]
INCEPTION_128_K357_R32 = [[32], [3, 32, 32], [5, 32, 32], [7, 32, 32]]
INCEPTION_128_K3711_R64 = [[32], [3, 64, 32], [7, 64, 32], [11, 64, 32]]
INCEPTION_128_K357_R64 = [[32], [3, 64, 32], [5, 64, 32], [7, 64, 32]]
INCEPTION_64_K3711_R32 = [[16], [3, 32, 16], [7, 32, 16], [11, 32, 16]]
INCEPTION_256_K3711_R64 = [[64], [3, 64, 64], [7, 64, 64], [11, 64, 64]]
INCEPTION_64_K3711_R64 = [[16], [3, 64, 16], [7, 64, 16], [11, 64, 16]]

STEM_CHANNELS = 128


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (1.0 is the published network)."""
    return max(1, round(channels * width))


class ParallelConcat(nn.ModuleList):
    """Inception module: branches side by side, outputs concatenated on channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self], dim=1)


class ParallelSum(nn.ModuleList):
    """Two paths over the same input, summed: the body of every ChannelsN module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self[0](x)
        for path in self[1:]:
            out = out + path(x)
        return out


def inception(cin: int, config: list[list[int]], width: float) -> tuple[ParallelConcat, int]:
    """An inception module and its output channel count."""

    def conv_bn_relu(c_in: int, c_out: int, k: int) -> list[nn.Module]:
        # Non-affine BN inside inception modules, as in the Torch7 original.
        return [
            nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1, affine=False),
            nn.ReLU(inplace=True),
        ]

    c0 = scaled(config[0][0], width)
    branches = [nn.Sequential(*conv_bn_relu(cin, c0, 1))]
    cout = c0
    for k, r, o in config[1:]:
        r, o = scaled(r, width), scaled(o, width)
        branches.append(nn.Sequential(*conv_bn_relu(cin, r, 1), *conv_bn_relu(r, o, k)))
        cout += o
    return ParallelConcat(branches), cout


def chain(cin: int, parts: list, width: float) -> tuple[nn.Sequential, int]:
    """A path: a list of inception configs, pools, upsamplers and nested Channels modules."""
    layers: list[nn.Module] = []
    c = cin
    for part in parts:
        if isinstance(part, nn.Module):
            layers.append(part)
        elif callable(part):  # a nested ChannelsN builder
            module, c = part(c, width)
            layers.append(module)
        else:
            module, c = inception(c, part, width)
            layers.append(module)
    return nn.Sequential(*layers), c


def channels_module(paths: list[list], cin: int, width: float) -> tuple[nn.Sequential, int]:
    built = [chain(cin, p, width) for p in paths]
    couts = {c for _, c in built}
    assert len(couts) == 1, f"paths disagree on channels: {couts}"
    return nn.Sequential(ParallelSum([m for m, _ in built])), couts.pop()


class NearestUpsample2x(nn.Module):
    """Nearest-neighbour x2 (the original's ``UpsamplingNearest2d``), by output size rather than
    scale factor so the exported Resize names its ``sizes``, which TensorRT prefers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode="nearest")


def _up() -> nn.Module:
    return NearestUpsample2x()


# The ChannelsN modules of the original, each two paths summed (letters as in the table above).


def channels1(cin: int, width: float) -> tuple[nn.Sequential, int]:
    # [A, A], [pool, A, A, A, up]
    paths = [
        [INCEPTION_256_K357_R32, INCEPTION_256_K357_R32],
        [nn.AvgPool2d(2), INCEPTION_256_K357_R32, INCEPTION_256_K357_R32,
         INCEPTION_256_K357_R32, _up()],
    ]  # fmt: skip
    return channels_module(paths, cin, width)


def channels2(cin: int, width: float) -> tuple[nn.Sequential, int]:
    # [A, F], [pool, A, A, Channels1, A, F, up]
    paths = [
        [INCEPTION_256_K357_R32, INCEPTION_256_K3711_R64],
        [nn.AvgPool2d(2), INCEPTION_256_K357_R32, INCEPTION_256_K357_R32, channels1,
         INCEPTION_256_K357_R32, INCEPTION_256_K3711_R64, _up()],
    ]  # fmt: skip
    return channels_module(paths, cin, width)


def channels3(cin: int, width: float) -> tuple[nn.Sequential, int]:
    # [pool, B, H, Channels2, A, B, up], [B, C]
    paths = [
        [nn.MaxPool2d(2), INCEPTION_128_K357_R32, INCEPTION_256_K357_R32, channels2,
         INCEPTION_256_K357_R32, INCEPTION_128_K357_R32, _up()],
        [INCEPTION_128_K357_R32, INCEPTION_128_K3711_R64],
    ]  # fmt: skip
    return channels_module(paths, cin, width)


def channels4(cin: int, width: float) -> tuple[nn.Sequential, int]:
    # [pool, B, B, Channels3, D, E, up], [G]
    paths = [
        [nn.MaxPool2d(2), INCEPTION_128_K357_R32, INCEPTION_128_K357_R32, channels3,
         INCEPTION_128_K357_R64, INCEPTION_64_K3711_R32, _up()],
        [INCEPTION_64_K3711_R64],
    ]  # fmt: skip
    return channels_module(paths, cin, width)


def build_trunk(width: float = 1.0) -> tuple[list[nn.Module], int]:
    """Layers 0-3 of the published Sequential (stem and hourglass) and their output channels."""
    stem = scaled(STEM_CHANNELS, width)
    hourglass, cout = channels4(stem, width)
    return [
        nn.Conv2d(3, stem, 7, padding=3),
        nn.BatchNorm2d(stem),
        nn.ReLU(inplace=True),
        hourglass,
    ], cout


class MegaDepth(nn.Sequential):
    """The published network: NCHW RGB in [0, 1] (H, W multiples of 16) -> log-depth."""

    def __init__(self) -> None:
        trunk, cout = build_trunk(1.0)
        super().__init__(*trunk, nn.Conv2d(cout, 1, 3, padding=1))


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's ``module.`` prefix and drop ``num_batches_tracked`` counters."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[key.removeprefix("module.")] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a MegaDepth checkpoint (published file or plain state dict), never running code."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return clean_state_dict(obj)


def check_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, ignore_prefixes: tuple = ()
) -> None:
    """Raise a ValueError naming missing, unexpected and mis-shaped keys, if there are any."""
    expected = {
        k: v.shape
        for k, v in clean_state_dict(module.state_dict()).items()
        if not k.startswith(ignore_prefixes)
    }
    given = {k: v.shape for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(given[k])} != {tuple(expected[k])}"
        for k in set(expected) & set(given)
        if given[k] != expected[k]
    )
    if missing or unexpected or misshaped:

        def show(items: list[str]) -> str:
            head = ", ".join(items[:5])
            return f"{len(items)} ({head}{', ...' if len(items) > 5 else ''})"

        raise ValueError(
            f"{source}: does not fit the MegaDepth architecture: missing {show(missing)}; "
            f"unexpected {show(unexpected)}; mis-shaped {show(misshaped)}"
        )


def load_megadepth(path: str | Path) -> MegaDepth:
    """Load MegaDepth weights (``best_generalization_net_G.pth`` as published, or a plain state
    dict) into the original architecture; returns the model in eval mode."""
    state = read_state_dict(path)
    model = MegaDepth()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=False)  # strict=False only for num_batches_tracked
    return model.eval()
