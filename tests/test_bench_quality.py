"""bokeh-bench quality: the paper author's PSNR/SSIM protocol, baselines, pair discovery."""

import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dbsi.benchmarks.pairs import select_pairs
from dbsi.benchmarks.quality import evaluate, global_blur, identity, psnr, read_image, ssim
from tests.conftest import real_photo


@pytest.fixture
def photo_files(tmp_path):
    """A real photo saved as JPEG and a blurred version as PNG."""
    bgr = np.ascontiguousarray(real_photo("coffee")[..., ::-1])
    cv2.imwrite(str(tmp_path / "target.jpg"), bgr)
    cv2.imwrite(str(tmp_path / "prediction.png"), cv2.GaussianBlur(bgr, (5, 5), 0))
    return tmp_path / "target.jpg", tmp_path / "prediction.png"


def test_psnr_is_computed_on_the_uint8_pixels_opencv_decodes(photo_files):
    target, prediction = (read_image(p) for p in photo_files)
    mse = np.mean((cv2.imread(str(photo_files[0])).astype(float) - prediction.astype(float)) ** 2)
    assert psnr(target, prediction) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_ssim_is_the_mean_of_per_channel_7x7_uniform_ssim(photo_files):
    target, prediction = (read_image(p) for p in photo_files)
    per_channel = [
        structural_similarity(target[..., c], prediction[..., c], win_size=7, data_range=255)
        for c in range(3)
    ]
    assert ssim(target, prediction) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_identical_images_give_infinite_psnr_and_unit_ssim(photo_files):
    target = read_image(photo_files[0])
    assert psnr(target, target.copy()) == math.inf
    assert ssim(target, target.copy()) == pytest.approx(1.0)


def test_identity_baseline_on_identical_pair_reports_inf_and_one(tmp_path):
    bgr = np.ascontiguousarray(real_photo("chelsea")[..., ::-1])
    for sub in ("original", "bokeh"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "7.png"), bgr)
    pairs, _, _ = select_pairs(tmp_path)
    methods = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    summary, per_pair = evaluate(methods, pairs, None, "unavailable: test", log=print)
    by_method = {r["method"]: r for r in summary}
    assert by_method["identity"]["psnr_db"] == math.inf
    assert by_method["identity"]["ssim"] == pytest.approx(1.0)
    assert by_method["identity"]["lpips"] == "unavailable"
    assert 10 < by_method["gaussian-blur-75"]["psnr_db"] < 40
    assert len(per_pair) == 2


def make_layout(root, ids, sub="Training"):
    for kind in ("original", "bokeh"):
        folder = root / sub / kind
        folder.mkdir(parents=True)
        for i in ids:
            cv2.imwrite(str(folder / f"{i}.jpg"), np.zeros((40, 40, 3), np.uint8))


def test_aim_layout_defaults_to_val294(tmp_path):
    make_layout(tmp_path, [4399, 4400, 4693])
    pairs, chosen, _ = select_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["4400", "4693"]
    assert "Val294" in chosen
    assert [p.stem for p in select_pairs(tmp_path, "all")[0]] == ["4399", "4400", "4693"]


def test_pynet_layout_takes_every_pair_in_numeric_order(tmp_path):
    make_layout(tmp_path, [10, 9, 4400], sub="train")
    pairs, chosen, _ = select_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["9", "10", "4400"]
    assert chosen.endswith("PyNET layout, all 3 pairs")


def test_folder_without_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no EBB! layout found"):
        select_pairs(tmp_path)
