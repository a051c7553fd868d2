"""Everything PyTorch: the MegaDepth hourglass, the DBSI weight predictor, the blur bank, the
render, and (in submodules) data, losses, phases and checkpoints.

The names below are imported on first use, not with the package: ``dbsi.train.config`` is plain
Python that the lean runtime and the benchmarks share, ``dbsi.train.metrics`` (PSNR, the
protocol's SSIM) is numpy that export and the benchmarks share, and importing either must not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbsi.train.blur import GaussianBlurBank, gaussian_kernel_1d
    from dbsi.train.config import BokehConfig, opencv_gaussian_sigma
    from dbsi.train.megadepth import MegaDepth, load_megadepth
    from dbsi.train.render import BokehRenderer, check_image
    from dbsi.train.weight_predictor import WeightPredictor

# each name of __all__ -> the submodule that defines it
_HOMES = {
    "BokehConfig": "config",
    "BokehRenderer": "render",
    "GaussianBlurBank": "blur",
    "MegaDepth": "megadepth",
    "WeightPredictor": "weight_predictor",
    "check_image": "render",
    "gaussian_kernel_1d": "blur",
    "load_megadepth": "megadepth",
    "opencv_gaussian_sigma": "config",
}

__all__ = [
    "BokehConfig",
    "BokehRenderer",
    "GaussianBlurBank",
    "MegaDepth",
    "WeightPredictor",
    "check_image",
    "gaussian_kernel_1d",
    "load_megadepth",
    "opencv_gaussian_sigma",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
