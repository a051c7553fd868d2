"""DBSI's weight predictor: the MegaDepth trunk, its last conv replaced by 3x3 conv 64 -> n+1,
then a softmax over the n+1 maps so that the weights sum to one at every pixel (eq. 2)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dbsi.train.megadepth import build_trunk, check_state_dict, read_state_dict

HEAD_INDEX = "4"


class WeightPredictor(nn.Sequential):
    """NCHW RGB in [0, 1] (H, W multiples of 16) -> softmax weights, N x num_maps x H x W.

    ``width`` scales every channel count; 1.0 is the published MegaDepth and the only width
    that MegaDepth weights fit.
    """

    def __init__(self, num_maps: int = 4, width: float = 1.0) -> None:
        trunk, cout = build_trunk(width)
        super().__init__(*trunk, nn.Conv2d(cout, num_maps, 3, padding=1), nn.Softmax(dim=1))
        self.width = width

    def init_backbone(self, megadepth_path: str | Path) -> None:
        """Copy every MegaDepth layer except the replaced last conv from a checkpoint."""
        if self.width != 1.0:
            raise ValueError(
                f"{megadepth_path}: MegaDepth weights fit only width 1.0, not {self.width}"
            )
        state = read_state_dict(megadepth_path)
        head = (f"{HEAD_INDEX}.", "5.")
        check_state_dict(self, state, str(megadepth_path), ignore_prefixes=head)
        trunk_state = {k: v for k, v in state.items() if not k.startswith(head)}
        self.load_state_dict(trunk_state, strict=False)
