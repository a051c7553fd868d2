"""bokeh-bench quality: the paper author's PSNR/SSIM protocol, baselines, pair discovery."""

import json
import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dbsi.benchmarks.pairs import select_pairs
from dbsi.benchmarks.quality import evaluate, global_blur, identity, read_bgr
from dbsi.train.metrics import in_focus_mask, protocol_ssim, psnr
from tests.conftest import real_photo


@pytest.fixture
def photo_files(tmp_path):
    """A real photo saved as JPEG and a blurred version as PNG."""
    bgr = np.ascontiguousarray(real_photo("coffee")[..., ::-1])
    cv2.imwrite(str(tmp_path / "target.jpg"), bgr)
    cv2.imwrite(str(tmp_path / "prediction.png"), cv2.GaussianBlur(bgr, (5, 5), 0))
    return tmp_path / "target.jpg", tmp_path / "prediction.png"


def test_psnr_is_computed_on_the_uint8_pixels_opencv_decodes(photo_files):
    target, prediction = (read_bgr(p) for p in photo_files)
    mse = np.mean((cv2.imread(str(photo_files[0])).astype(float) - prediction.astype(float)) ** 2)
    assert psnr(target, prediction) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_ssim_is_the_mean_of_per_channel_7x7_uniform_ssim(photo_files):
    target, prediction = (read_bgr(p) for p in photo_files)
    per_channel = [
        structural_similarity(target[..., c], prediction[..., c], win_size=7, data_range=255)
        for c in range(3)
    ]
    assert protocol_ssim(target, prediction) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_identical_images_give_infinite_psnr_and_unit_ssim(photo_files):
    target = read_bgr(photo_files[0])
    assert psnr(target, target.copy()) == math.inf
    assert protocol_ssim(target, target.copy()) == pytest.approx(1.0)


def test_identity_baseline_on_identical_pair_reports_inf_and_one(tmp_path):
    bgr = np.ascontiguousarray(real_photo("chelsea")[..., ::-1])
    for sub in ("original", "bokeh"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "7.png"), bgr)
    pairs, _, _ = select_pairs(tmp_path)
    methods = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    summary, per_pair = evaluate(methods, pairs, None, log=print)
    by_method = {r["method"]: r for r in summary}
    assert by_method["identity"]["psnr_db"] == math.inf
    assert by_method["identity"]["ssim"] == pytest.approx(1.0)
    assert by_method["identity"]["lpips"] is None
    assert 10 < by_method["gaussian-blur-75"]["psnr_db"] < 40
    assert len(per_pair) == 2


def test_without_lpips_no_row_carries_a_status_only_a_null_value(tmp_path):
    bgr = np.ascontiguousarray(real_photo("chelsea")[..., ::-1])
    for sub in ("original", "bokeh"):
        (tmp_path / sub).mkdir()
        for stem in ("1", "2"):
            cv2.imwrite(str(tmp_path / sub / f"{stem}.png"), bgr)
    pairs, _, _ = select_pairs(tmp_path)
    methods = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    summary, per_pair = evaluate(methods, pairs, None, log=print)
    for row in summary + per_pair:
        assert row["lpips"] is None
        assert not any("unavailable" in str(value) for value in row.values()), row


def make_layout(root, ids, sub="Training"):
    """Pairs for discovery only (selection never decodes): one byte per file."""
    for kind in ("original", "bokeh"):
        folder = root / sub / kind if sub else root / kind
        folder.mkdir(parents=True)
        for i in ids:
            (folder / f"{i}.jpg").write_bytes(b"x")


VAL294 = list(range(4400, 4694))


def test_aim_layout_defaults_to_val294_when_every_id_is_present(tmp_path):
    make_layout(tmp_path, [4399, *VAL294])
    pairs, chosen, _ = select_pairs(tmp_path)
    assert [p.stem for p in pairs] == [str(i) for i in VAL294]
    assert "Val294" in chosen and "all 294 are present" in chosen
    assert len(select_pairs(tmp_path, "all")[0]) == 295


def test_a_plain_layout_follows_the_same_val294_rule_as_training(tmp_path):
    make_layout(tmp_path, [1, *VAL294], sub="")
    pairs, chosen, _ = select_pairs(tmp_path)
    assert len(pairs) == 294 and "Val294" in chosen


def test_a_partial_val294_is_never_chosen_silently(tmp_path):
    make_layout(tmp_path, [4399, 4400, 4693])
    pairs, chosen, _ = select_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["4399", "4400", "4693"]
    assert "not all Val294 ids" in chosen
    with pytest.raises(ValueError, match="2 of 294 have a pair"):
        select_pairs(tmp_path, "val294")


def test_pynet_layout_takes_every_pair_in_numeric_order(tmp_path):
    make_layout(tmp_path, [10, 9, 4400], sub="train")
    pairs, chosen, _ = select_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["9", "10", "4400"]
    assert "PyNET layout, all 3 pairs" in chosen


def test_a_split_file_selects_its_val_stems_and_names_the_missing_ones(tmp_path):
    make_layout(tmp_path / "data", range(6), sub="")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["0", "1", "2", "3"], "val": ["5", "4", "77"]}))
    pairs, chosen, left_out = select_pairs(tmp_path / "data", split_file=split)
    assert [p.stem for p in pairs] == ["5", "4"]
    assert str(split) in chosen
    assert left_out == [f"{split}: val stem '77' has no usable pair in {tmp_path / 'data'}"]


def test_a_malformed_split_file_is_a_clear_error(tmp_path):
    make_layout(tmp_path, range(3), sub="")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val": ["1"]}))
    with pytest.raises(ValueError, match="not a split file"):
        select_pairs(tmp_path, split_file=split)


def test_a_truncated_jpeg_is_a_failed_pair_with_the_reason(tmp_path):
    bgr = np.ascontiguousarray(real_photo("chelsea")[..., ::-1])
    for sub in ("original", "bokeh"):
        (tmp_path / sub).mkdir()
        for stem in ("1", "2"):
            cv2.imwrite(str(tmp_path / sub / f"{stem}.jpg"), bgr)
    cut = tmp_path / "bokeh" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[:-5000])
    assert cv2.imread(str(cut)) is not None  # OpenCV alone would score its grey rows
    pairs, _, _ = select_pairs(tmp_path)
    logged = []
    summary, per_pair = evaluate([("identity", "-", identity)], pairs, None, log=logged.append)
    assert summary[0]["pairs"] == 1 and summary[0]["failed"] == 1
    assert logged == [
        f"skipped: {cut}: truncated JPEG (the data ends before its end-of-image marker)"
    ]
    assert [r["pair"] for r in per_pair] == ["1"]


def test_folder_without_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no EBB! layout found"):
        select_pairs(tmp_path)


def half_in_focus_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real photo and its 'bokeh': the left half untouched (in focus), the right half blurred."""
    original = np.ascontiguousarray(real_photo("coffee")[..., ::-1])
    target = original.copy()
    half = original.shape[1] // 2
    target[:, half:] = cv2.GaussianBlur(original, (21, 21), 0)[:, half:]
    return original, target


def test_the_in_focus_mask_is_where_the_ground_truth_is_the_input():
    original, target = half_in_focus_pair()
    mask = in_focus_mask(original, target)
    half = original.shape[1] // 2
    assert mask[:, : half - 3].mean() > 0.99
    assert mask[:, half + 3 :].mean() < 0.2  # flat patches of the photo stay alike when blurred


def test_a_pair_that_differs_everywhere_has_no_in_focus_region():
    original, _ = half_in_focus_pair()
    brighter = np.clip(original.astype(int) + 12, 0, 255).astype(np.uint8)  # another exposure
    assert in_focus_mask(original, brighter) is None


def test_masked_scores_ignore_the_pixels_outside_the_mask():
    original, target = half_in_focus_pair()
    mask = in_focus_mask(original, target)
    # A prediction that blurs everything is wrong in focus and exact elsewhere: over the whole
    # picture half its pixels are exact, which halves the error (+3 dB).
    everything_blurred = cv2.GaussianBlur(original, (21, 21), 0)
    assert psnr(target, everything_blurred) > psnr(target, everything_blurred, mask) + 2
    assert protocol_ssim(target, everything_blurred, mask) < protocol_ssim(target, target, mask)
    assert protocol_ssim(target, target, mask) == pytest.approx(1.0)
    # The sharp input is right in focus and wrong only outside.
    assert psnr(target, original, mask) > 45  # exact but for blurred pixels within 2 levels


def test_quality_rows_score_the_in_focus_region_of_aligned_pairs(tmp_path):
    original, target = half_in_focus_pair()
    for sub, image in (("original", original), ("bokeh", target)):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "1.png"), image)
    pairs, _, _ = select_pairs(tmp_path)
    methods = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    summary, _ = evaluate(methods, pairs, None, log=print)
    by_method = {r["method"]: r for r in summary}
    assert by_method["identity"]["psnr_in_focus_db"] > 45
    assert by_method["identity"]["in_focus_pairs"] == 1
    assert by_method["gaussian-blur-75"]["psnr_in_focus_db"] < 25
    assert by_method["gaussian-blur-75"]["ssim_in_focus"] < 0.6
