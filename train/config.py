"""The render configuration: the one source of truth that travels inside every artefact.

Kernel sizes, the network size and the render mode are decided here, saved in checkpoints,
written into ONNX metadata and engine sidecars, and read back from them; nothing downstream
re-declares them. This module is plain Python so the lean runtime can share the rules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

CONFIG_VERSION = 1
RENDER_MODES = ("fullres", "paper")
# The network is fully convolutional with four 2x2 poolings: sizes must be multiples of 16.
SIZE_MULTIPLE = 16


def opencv_gaussian_sigma(kernel_size: int) -> float:
    """Sigma that OpenCV's ``GaussianBlur(ksize=k, sigma=0)`` uses for a kernel of size k."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


@dataclasses.dataclass(frozen=True)
class BokehConfig:
    """Everything that defines a DBSI model and its render.

    ``kernel_sizes`` are defined at the network size (long side ``net_long_side``); in
    ``fullres`` mode the blurred layers are upsampled with the weights, so a blur's footprint is
    a fixed fraction of the picture whatever the input resolution.

    The default mode is ``fullres``, by measurement (README, "Two render modes"): on held-out
    synthetic pairs at 2x and 4x the network size it scores the higher PSNR overall and keeps
    the in-focus subject 5.2 and 6.9 dB closer to the truth than ``paper``, which passes every
    pixel through the network-size picture. ``paper`` stays available for the paper's protocol.
    """

    kernel_sizes: tuple[int, ...] = (25, 45, 75)
    net_long_side: int = 1024
    mode: str = "fullres"
    width: float = 1.0
    config_version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        if not self.kernel_sizes:
            raise ValueError("kernel_sizes: at least one blur kernel is needed")
        for k in self.kernel_sizes:
            if k < 3 or k % 2 == 0:
                raise ValueError(f"kernel_sizes: {k} is not an odd size >= 3")
        if self.net_long_side < SIZE_MULTIPLE or self.net_long_side % SIZE_MULTIPLE:
            raise ValueError(
                f"net_long_side: {self.net_long_side} is not a positive multiple of 16"
            )
        if self.net_long_side < self.min_net_side:
            raise ValueError(
                f"net_long_side: {self.net_long_side} is smaller than {self.min_net_side}, "
                f"the least size a {max(self.kernel_sizes)}-tap reflect-padded blur allows"
            )
        if self.mode not in RENDER_MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {', '.join(RENDER_MODES)}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width: {self.width} is outside (0, 4]")
        if self.config_version != CONFIG_VERSION:
            raise ValueError(
                f"config_version: {self.config_version} is not supported (this toolkit reads "
                f"version {CONFIG_VERSION})"
            )

    @property
    def num_maps(self) -> int:
        """Weight maps the network predicts: the sharp image plus one per blur."""
        return len(self.kernel_sizes) + 1

    @property
    def sigmas(self) -> tuple[float, ...]:
        return tuple(opencv_gaussian_sigma(k) for k in self.kernel_sizes)

    @property
    def max_pad(self) -> int:
        return max(self.kernel_sizes) // 2

    @property
    def min_input_side(self) -> int:
        """Smallest input height or width the render accepts.

        A reflect pad must be smaller than the padded side, so an image narrower than the
        largest blur's radius has no defined blur at its own scale.
        """
        return self.max_pad + 1

    @property
    def min_net_side(self) -> int:
        """Smallest network-side length: a multiple of 16 that the largest reflect pad fits."""
        return math.ceil(self.min_input_side / SIZE_MULTIPLE) * SIZE_MULTIPLE

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for an image: long side ``net_long_side``, aspect and
        orientation kept up to rounding the short side to a multiple of 16 (and at least
        ``min_net_side``). Integer arithmetic only, the same rule the exported graph computes."""
        return (
            network_side(height, max(height, width), self.net_long_side, self.min_net_side),
            network_side(width, max(height, width), self.net_long_side, self.min_net_side),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kernel_sizes"] = list(self.kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BokehConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)


def network_side(
    side: Any, long_side: Any, net_long_side: int, min_side: int, maximum: Any = max
) -> Any:
    """``round(side * net_long_side / long_side / 16) * 16``, floored at ``min_side``.

    Written with integer floor division only so that it works unchanged on Python ints and on
    symbolic shapes during ONNX export (pass ``maximum=torch.sym_max`` there).
    """
    rounded = (
        (2 * side * net_long_side + SIZE_MULTIPLE * long_side)
        // (2 * SIZE_MULTIPLE * long_side)
        * SIZE_MULTIPLE
    )
    return maximum(rounded, min_side)
