"""Everything PyTorch: the MegaDepth hourglass, the DBSI weight predictor, the blur bank, the
render, and (in submodules) data, losses, phases and checkpoints."""

from dbsi.train.blur import GaussianBlurBank, gaussian_kernel_1d
from dbsi.train.config import BokehConfig, opencv_gaussian_sigma
from dbsi.train.megadepth import MegaDepth, load_megadepth
from dbsi.train.render import BokehRenderer, check_image, render_bokeh
from dbsi.train.weight_predictor import WeightPredictor

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
    "render_bokeh",
]
