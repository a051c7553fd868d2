"""The render module: network size, both modes, the weights' partition of unity, bad input."""

import cv2
import numpy as np
import pytest
import torch

from dbsi.train import BokehConfig, BokehRenderer
from tests.conftest import real_photo

TINY = dict(width=0.125, net_long_side=128)


def to_tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]


def renderer(mode="fullres", **kw) -> BokehRenderer:
    torch.manual_seed(0)
    return BokehRenderer(BokehConfig(mode=mode, **{**TINY, **kw})).eval()


def force_single_map(model: BokehRenderer, index: int) -> BokehRenderer:
    """Make the softmax select one map everywhere: a huge bias on that map's logit."""
    head = model.predictor[4]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-50.0)
        head.bias[index] = 50.0
    return model


@pytest.mark.parametrize("mode", ["fullres", "paper"])
@pytest.mark.parametrize("size", [(96, 128), (333, 517), (517, 333), (40, 300)])
def test_weights_sum_to_one_and_output_keeps_input_size(mode, size):
    image = torch.rand(2, 3, *size)
    with torch.no_grad():
        bokeh, weights = renderer(mode)(image)
    assert bokeh.shape == image.shape
    assert weights.shape == (2, 4, *size)
    assert weights.min() >= 0
    torch.testing.assert_close(weights.sum(1), torch.ones(2, *size), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "size, expected",
    [
        ((1024, 1536), (688, 1024)),
        ((1536, 1024), (1024, 688)),
        ((1024, 1575), (672, 1024)),
        ((333, 517), (656, 1024)),
        ((768, 1024), (768, 1024)),
        ((40, 4000), (48, 1024)),
    ],
)
def test_network_size_keeps_orientation_and_aspect(size, expected):
    config = BokehConfig(net_long_side=1024)
    assert config.network_size(*size) == expected
    assert tuple(BokehRenderer(config).network_size(*size)) == expected


def test_paper_mode_is_blend_at_network_size_then_bilinear_resize():
    photo = real_photo("chelsea")  # 300x451
    model = renderer("paper")
    image = to_tensor(photo)
    net_h, net_w = model.config.network_size(*photo.shape[:2])
    small = cv2.resize(photo.astype(np.float32) / 255, (net_w, net_h))
    with torch.no_grad():
        weights = model.predictor(to_tensor(small * 255)).numpy()[0]
        bokeh = model(image)[0][0].permute(1, 2, 0).numpy()
    layers = [small] + [cv2.GaussianBlur(small, (k, k), 0) for k in model.config.kernel_sizes]
    blended = sum(w[..., None] * layer for w, layer in zip(weights, layers))
    expected = cv2.resize(blended, (photo.shape[1], photo.shape[0]))  # INTER_LINEAR
    np.testing.assert_allclose(bokeh, expected, atol=2e-5, rtol=0)


def test_fullres_mode_keeps_every_pixel_of_the_sharp_subject():
    image = to_tensor(real_photo("astronaut")[:300, :400])
    with torch.no_grad():
        sharp = force_single_map(renderer("fullres"), 0)(image)[0]
        paper = force_single_map(renderer("paper"), 0)(image)[0]
    torch.testing.assert_close(sharp, image, atol=1e-6, rtol=0)
    assert (paper - image).abs().max() > 0.1  # the paper's protocol loses detail


def test_fullres_mode_is_eq1_of_the_separately_upsampled_weights_and_layers():
    """The grouped resizes of ``blend_upsampled`` compute what eq. 1 of each upsampled tensor
    computes, up to the order of the sum."""
    from dbsi.train.render import blend, resize_bilinear

    image = to_tensor(real_photo("chelsea"))  # 300x451
    model = renderer("fullres")
    net_h, net_w = model.network_size(*image.shape[-2:])
    with torch.no_grad():
        bokeh, weights_full = model(image)
        small = resize_bilinear(image, net_h, net_w)
        weights = resize_bilinear(model.predictor(small), *image.shape[-2:])
        layers = [resize_bilinear(layer, *image.shape[-2:]) for layer in model.blurs(small)]
        expected = blend(weights, image, layers)
    torch.testing.assert_close(weights_full, weights, atol=0, rtol=0)
    torch.testing.assert_close(bokeh, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["fullres", "paper"])
def test_a_bgr_picture_renders_the_rgb_render_in_bgr(mode):
    """Only the predictor's copy is flipped; every other step works channel by channel."""
    image = to_tensor(real_photo("chelsea"))
    model = renderer(mode)
    with torch.no_grad():
        rgb_bokeh, rgb_weights = model(image)
        bgr_bokeh, bgr_weights, _ = model.render(image.flip(1), bgr=True)
    assert torch.equal(bgr_bokeh, rgb_bokeh.flip(1))
    assert torch.equal(bgr_weights, rgb_weights)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("index", [1, 2, 3])
def test_fullres_blur_scales_with_resolution(index):
    """At twice the network size a layer looks like the full image blurred with twice the
    sigma: the blur is defined relative to the picture, not to pixels."""
    photo = real_photo("astronaut")[:256, :256]  # network size 128 -> scale 2
    model = force_single_map(renderer("fullres"), index)
    with torch.no_grad():
        out = model(to_tensor(photo))[0][0].permute(1, 2, 0).numpy()
    sigma = 2 * model.config.sigmas[index - 1]
    reference = cv2.GaussianBlur(photo.astype(np.float32) / 255, (0, 0), sigma)
    # 54-72 dB measured; a sigma 10% off gives about 40 dB.
    assert psnr(out, reference) > 50


def test_modes_agree_at_network_size():
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        a = renderer("fullres")(image)[0]
        b = renderer("paper")(image)[0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.rand(3, 64, 64), "N x 3 x H x W"),
        (torch.rand(1, 4, 64, 64), "3 channels"),
        (torch.rand(1, 1, 64, 64), "3 channels"),
        (torch.rand(0, 3, 64, 64), "empty"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point"),
        (torch.rand(1, 3, 37, 64), "at least 38"),
        (torch.full((1, 3, 64, 64), float("nan")), "non-finite"),
        (torch.full((1, 3, 64, 64), float("inf")), "non-finite"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_constraint(image, message):
    with pytest.raises(ValueError, match=message):
        renderer()(image)
