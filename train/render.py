"""The whole DBSI render as one module: image of any size -> bokeh image (and weight maps).

This is the module the exporter traces as is, so its forward uses only shape arithmetic that
survives symbolic tracing (see ``dbsi.train.config.network_side``).

Two modes (docs/DESIGN.md section 2), both predicting weights and blurring at the network size:

- ``paper``: blend at the network size, resize the result back bilinearly (the paper's protocol;
  the in-focus subject loses its full-resolution detail).
- ``fullres``: upsample the weight maps and the blurred layers bilinearly to the input size and
  blend there with the untouched input, so the sharp subject keeps every pixel. Upsampling a
  layer blurred with sigma >= 4 px at the network size is the same, up to interpolation error,
  as blurring the full image with sigma scaled by input/network size: blur sizes are defined at
  the network size and scale with the resolution, and the graph needs no size-dependent kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dbsi.train.aperture import ApertureMix
from dbsi.train.blur import GaussianBlurBank
from dbsi.train.config import BokehConfig, network_side
from dbsi.train.temporal import TemporalMix
from dbsi.train.weight_predictor import WeightPredictor


def resize_bilinear(image: torch.Tensor, height, width) -> torch.Tensor:
    """Bilinear resize, half-pixel centres, no antialiasing (what ONNX and TensorRT run)."""
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)


def check_image(image: torch.Tensor, config: BokehConfig) -> None:
    """Raise ValueError when ``image`` is not an N x 3 x H x W batch the render can take."""
    if image.dim() != 4:
        raise ValueError(f"image must be N x 3 x H x W, got {image.dim()} dimensions")
    n, c, h, w = image.shape
    if c != 3:
        raise ValueError(f"image must have 3 channels (RGB), got {c}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"image is empty ({n}x{c}x{h}x{w})")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point in [0, 1], got {image.dtype}")
    if min(h, w) < config.min_input_side:
        raise ValueError(
            f"image {h}x{w} is too small: both sides must be at least {config.min_input_side} "
            f"for a {max(config.kernel_sizes)}-tap blur"
        )
    if not torch.isfinite(image).all():
        raise ValueError("image has non-finite values (NaN or inf)")


def blend(weights: torch.Tensor, sharp: torch.Tensor, blurred: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 1: W0 * I + sum_i Wi * B_i, weights N x (n+1) x H x W."""
    out = weights[:, 0:1] * sharp
    for i, layer in enumerate(blurred):
        out = out + weights[:, i + 1 : i + 2] * layer
    return out


def blend_upsampled(
    weights: torch.Tensor, sharp: torch.Tensor, blurred: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 at ``sharp``'s size, from weights and blurred layers at the network size, each
    upsampled bilinearly: (bokeh, the weights at ``sharp``'s size).

    Why this form and not ``blend`` of the upsampled tensors: three resizes in all (the sharp
    map, the blur maps, the blurred layers stacked) and no channel split at full resolution.
    OpenVINO's resize costs about the same for 1 to 9 channels (its kernels vectorise over
    channels), and a split of the full-size weights ran on its reference kernel: measured on an
    AVX-512 Xeon, with the picture kept BGR as well (``bgr`` of ``BokehRenderer.render``), this
    part of the graph took 147 instead of 204 ms at 1024x1536 and 492 instead of 646 ms at 4K.
    Only the order of the sum differs from ``blend``."""
    height, width = sharp.shape[-2:]
    sharp_weight = resize_bilinear(weights[:, :1], height, width)
    blur_weights = resize_bilinear(weights[:, 1:], height, width)
    layers = resize_bilinear(torch.cat(blurred, dim=1), height, width)
    layers = layers.unflatten(1, (len(blurred), sharp.shape[1]))
    bokeh = sharp_weight * sharp + (blur_weights.unsqueeze(2) * layers).sum(dim=1)
    return bokeh, torch.cat([sharp_weight, blur_weights], dim=1)


class BokehRenderer(nn.Module):
    """N x 3 x H x W RGB in [0, 1], any H, W >= ``config.min_input_side`` ->
    (bokeh N x 3 x H x W, weights N x (n+1) x H x W)."""

    def __init__(self, config: BokehConfig) -> None:
        super().__init__()
        self.config = config
        self.predictor = WeightPredictor(config.num_maps, config.width)
        self.blurs = GaussianBlurBank(config.kernel_sizes)
        self.aperture = ApertureMix(config.sigmas)
        self.temporal = TemporalMix()

    def network_size(self, height, width) -> tuple:
        long_side = torch.sym_max(height, width)
        cfg = self.config
        return (
            network_side(height, long_side, cfg.net_long_side, cfg.min_net_side, torch.sym_max),
            network_side(width, long_side, cfg.net_long_side, cfg.min_net_side, torch.sym_max),
        )

    def forward(
        self, image: torch.Tensor, aperture: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bokeh, weights at the input size). ``aperture``: one value per picture
        (``dbsi.train.aperture``); None renders as trained (training never passes one)."""
        bokeh, weights, _ = self.render(image, aperture)
        return bokeh, weights

    def render(
        self,
        image: torch.Tensor,
        aperture: torch.Tensor | None = None,
        temporal: tuple[torch.Tensor, torch.Tensor] | None = None,
        bgr: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(bokeh, weights at the input size, the maps each picture used at the network size,
        before the aperture). ``temporal``: (state, mix) of ``dbsi.train.temporal``; None uses
        each picture's own maps. ``bgr``: the picture's channels are B, G, R, and so are the
        bokeh's; only the network-size copy the predictor sees is flipped to RGB, as every
        other step works channel by channel (the exported graph: no flip at full size)."""
        # The checks read values back to the host: impossible while tracing for export, and
        # forbidden while a CUDA graph is being captured.
        capturing = image.is_cuda and torch.cuda.is_current_stream_capturing()
        if not (torch.compiler.is_compiling() or capturing):
            check_image(image, self.config)
            if aperture is not None and tuple(aperture.shape) != (image.shape[0],):
                raise ValueError(
                    f"aperture must hold one value per picture ({image.shape[0]}), got shape "
                    f"{tuple(aperture.shape)}"
                )
        height, width = image.shape[-2:]
        net_h, net_w = self.network_size(height, width)
        small = resize_bilinear(image, net_h, net_w)
        maps = self.predictor(small.flip(1) if bgr else small)
        if temporal is not None:
            maps = self.temporal(maps, *temporal)
        weights = maps if aperture is None else self.aperture(maps, aperture)
        blurred = self.blurs(small)
        if self.config.mode == "paper":
            bokeh = resize_bilinear(blend(weights, small, blurred), height, width)
            weights_full = resize_bilinear(weights, height, width)
        else:
            bokeh, weights_full = blend_upsampled(weights, image, blurred)
        return bokeh, weights_full, maps
