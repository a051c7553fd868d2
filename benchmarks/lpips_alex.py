"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), forward pass only.

The ``lpips`` package cannot be imported beside this torch (it imports torchvision), so its
forward is written out here and fed the same two weight files it would use:

- the linear heads, ``weights/v0.1/alex.pth`` inside the installed ``lpips`` package (found
  without importing it; keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``);
- the AlexNet backbone, torchvision's ``alexnet-owt-7be5be79.pth`` (keys ``features.N.*``),
  which is a separate download: without it LPIPS is unavailable, never a number.

Forward: inputs RGB in [-1, 1]; scaling layer ``(x - shift) / scale``; AlexNet features tapped
after each of its five ReLUs; each tap unit-normalised over channels; squared difference; a
1x1 linear head per tap; spatial mean; sum over taps.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision's AlexNet ``features``: index of each layer, and the 5 ReLU indices tapped.
TAPS = (1, 4, 7, 9, 11)
TAP_CHANNELS = (64, 192, 384, 256, 256)


def alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional trunk up to the fifth ReLU, indexed as torchvision's
    ``features`` so that its state-dict keys load unchanged."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),  # 0
        nn.ReLU(),  # 1
        nn.MaxPool2d(3, stride=2),  # 2
        nn.Conv2d(64, 192, 5, padding=2),  # 3
        nn.ReLU(),  # 4
        nn.MaxPool2d(3, stride=2),  # 5
        nn.Conv2d(192, 384, 3, padding=1),  # 6
        nn.ReLU(),  # 7
        nn.Conv2d(384, 256, 3, padding=1),  # 8
        nn.ReLU(),  # 9
        nn.Conv2d(256, 256, 3, padding=1),  # 10
        nn.ReLU(),  # 11
    )


def unit_normalise(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


class LpipsAlex(nn.Module):
    """LPIPS distance between two N x 3 x H x W RGB batches in [-1, 1]; returns N values."""

    def __init__(self, heads: dict[str, torch.Tensor], backbone: dict[str, torch.Tensor] | None):
        """``backbone=None`` leaves the AlexNet weights random: for plumbing tests only."""
        super().__init__()
        self.features = alexnet_features()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        for i, head in enumerate(self.heads):
            key = f"lin{i}.model.1.weight"
            if key not in heads or heads[key].shape != head.weight.shape:
                raise ValueError(f"LPIPS heads: {key} is missing or mis-shaped")
            head.weight.data.copy_(heads[key])
        if backbone is not None:
            trunk = {
                k[len("features.") :]: v for k, v in backbone.items() if k.startswith("features.")
            }
            try:
                self.features.load_state_dict(trunk, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"AlexNet backbone does not fit: {exc}") from exc
        self.eval()

    def taps(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (image - self.shift) / self.scale
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                out.append(unit_normalise(x))
        return out

    def forward(self, image0: torch.Tensor, image1: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(image0.shape[0], device=image0.device)
        for head, f0, f1 in zip(self.heads, self.taps(image0), self.taps(image1)):
            total = total + head((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total


def heads_path() -> Path | None:
    """``weights/v0.1/alex.pth`` of the installed lpips package, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / "v0.1" / "alex.pth"
        if candidate.is_file():
            return candidate
    return None


def backbone_path(explicit: str | Path | None = None) -> Path | None:
    """The AlexNet backbone file: ``explicit`` if given (and present), else torch hub's
    checkpoint folder under ``$TORCH_HOME`` or ``~/.cache/torch``."""
    if explicit is not None:
        path = Path(explicit)
        return path if path.is_file() else None
    homes = [os.environ.get("TORCH_HOME"), os.path.join(os.path.expanduser("~"), ".cache", "torch")]
    for home in filter(None, homes):
        candidate = Path(home) / "hub" / "checkpoints" / BACKBONE_FILE
        if candidate.is_file():
            return candidate
    return None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a state dict
        raise ValueError(f"{path}: not a PyTorch weight file ({type(exc).__name__})") from exc


def load_lpips(backbone: str | Path | None = None) -> tuple[LpipsAlex | None, str]:
    """The LPIPS AlexNet v0.1 model and where its weights came from, or (None, why it is
    unavailable)."""
    heads = heads_path()
    if heads is None:
        return None, "unavailable: the lpips package (its v0.1 alex.pth heads) is not installed"
    trunk = backbone_path(backbone)
    if trunk is None:
        where = backbone or "$TORCH_HOME/hub/checkpoints or ~/.cache/torch/hub/checkpoints"
        return None, f"unavailable: AlexNet backbone {BACKBONE_FILE} not found in {where}"
    return LpipsAlex(load_weights(heads), load_weights(trunk)), f"heads {heads}, backbone {trunk}"


def bgr_uint8_to_lpips_input(image) -> torch.Tensor:
    """H x W x 3 uint8 BGR (OpenCV) -> 1 x 3 x H x W RGB in [-1, 1]."""
    rgb = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float()
    return (rgb / 127.5 - 1.0)[None]


def lpips_distance(model: LpipsAlex, image0, image1) -> float:
    """LPIPS between two uint8 BGR images of the same size."""
    with torch.inference_mode():
        return float(model(bgr_uint8_to_lpips_input(image0), bgr_uint8_to_lpips_input(image1))[0])
