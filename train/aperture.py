"""Run-time aperture: one number per picture that scales how strong the blur is, without
retraining and without a second graph.

The blend weights put each pixel's mass on blur levels sigma_0 = 0 (the sharp photo) and
sigma_1 < ... < sigma_n (the blur bank). Aperture ``a`` moves the mass at level sigma_i to blur
``a * sigma_i``, split linearly between the two levels that bracket it (clamped at the largest
level): a fixed (n+1) x (n+1) matrix M(a) applied to the weight maps at every pixel, so the
learned mixtures keep their shape. ``a = 1`` is the identity exactly, ``a = 0`` puts every
pixel's weight on the sharp photo, and the mean blur level of every pixel grows with ``a``
(linear interpolation keeps it at ``a * sigma_i`` for each source level). ``a`` is clamped to
``APERTURE_RANGE``.

Everything is elementwise arithmetic, comparisons and ``where``, so the same code runs in
PyTorch, in ONNX Runtime and in TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dbsi.runtime.contract import APERTURE_RANGE


def blur_levels(sigmas: Sequence[float]) -> list[float]:
    """The levels weights sit on, in increasing order: 0 for the sharp photo, then the blur
    bank's sigmas; ValueError when two are equal."""
    levels = sorted([0.0, *(float(s) for s in sigmas)])
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"blur sigmas {list(sigmas)} must be positive and distinct")
    return levels


def aperture_matrix(levels: Sequence[float], aperture: torch.Tensor) -> torch.Tensor:
    """M(a) for each of N apertures: N x (n+1) x (n+1), ``M[:, j, i]`` the share of level i's
    weight that moves to level j. Every column sums to one; ``a = 1`` gives the identity
    exactly: a target equal to a level gets all of it (the bracket [level, next) holds it at
    fraction 0)."""
    low, high = APERTURE_RANGE
    level = torch.tensor(levels, dtype=aperture.dtype, device=aperture.device)
    target = (aperture.clamp(low, high)[:, None] * level[None, :]).clamp(max=level[-1])
    rows = []
    last = len(levels) - 1
    none = torch.zeros_like(target)
    for j in range(last + 1):
        if j < last:
            # Targets in [level j, level j+1): the part not passed up to level j+1.
            inside = (target >= level[j]) & (target < level[j + 1])
            share = torch.where(inside, 1 - (target - level[j]) / (level[j + 1] - level[j]), none)
        else:
            share = torch.where(target >= level[j], none + 1, none)
        if j > 0:
            # Targets in [level j-1, level j): the part passed up from level j-1.
            inside = (target >= level[j - 1]) & (target < level[j])
            fraction = (target - level[j - 1]) / (level[j] - level[j - 1])
            share = share + torch.where(inside, fraction, none)
        rows.append(share)
    return torch.stack(rows, dim=1)


class ApertureMix(nn.Module):
    """Weight maps N x (n+1) x H x W and apertures [N] -> the weight maps at those apertures.

    A module of its own so that the exported graph's nodes carry its name: the fp16 export
    keeps them in float32 (``dbsi.export.fp16``)."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        super().__init__()
        self.levels = blur_levels(sigmas)
        # Map k (0: sharp, then the bank in its configured order) sits at this level index.
        self.position = [self.levels.index(level) for level in [0.0, *map(float, sigmas)]]

    def forward(self, weights: torch.Tensor, aperture: torch.Tensor) -> torch.Tensor:
        mix = aperture_matrix(self.levels, aperture.to(weights.dtype))
        at = self.position
        mixed = []
        for j in range(len(at)):
            # Summed in map order: at a = 1 every term but one is an exact zero, so the map
            # comes out bit for bit.
            total = mix[:, at[j], at[0], None, None] * weights[:, 0]
            for i in range(1, len(at)):
                total = total + mix[:, at[j], at[i], None, None] * weights[:, i]
            mixed.append(total)
        return torch.stack(mixed, dim=1)
