"""Temporal smoothing of the weight maps, inside the exported graph: one graph serves photos
and video on every backend.

The network predicts each frame's blend weights on its own, and maps that shift a little from
frame to frame make the background pulse. Video runs smooth the maps over time, while each frame
is still blurred and blended from its own pixels (nothing ghosts). The smoothing is a linear
recurrence over the frames of a batch, ``m_k = c_k * m_(k-1) + (1 - c_k) * w_k``, which the
host turns into one matrix (``dbsi.runtime.temporal``): row k holds the coefficients of the
carried state and of the N predicted maps. In the graph that is one MatMul over the batch, so
it runs the same in PyTorch, ONNX Runtime, OpenVINO and TensorRT, and it stays exact for photos:
a mix of ones and zeros returns the predicted maps bit for bit.

The state is the maps the frame before the batch used, at the network size; any other size is
resized bilinearly (photos pass a zero 1 x 1 state that the mix ignores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalMix(nn.Module):
    """Weight maps N x K x h x w, a state 1 x K x hs x ws and a mix N x (N + 1) -> the maps
    each picture uses, N x K x h x w.

    A module of its own so that the exported graph's nodes carry its name: the fp16 export
    keeps them in float32 (``dbsi.export.fp16``)."""

    def forward(
        self, weights: torch.Tensor, state: torch.Tensor, mix: torch.Tensor
    ) -> torch.Tensor:
        n, k, h, w = weights.shape
        carried = F.interpolate(state, size=(h, w), mode="bilinear", align_corners=False)
        stacked = torch.cat([carried, weights], dim=0).reshape(n + 1, k * h * w)
        return torch.matmul(mix, stacked).reshape(n, k, h, w)
