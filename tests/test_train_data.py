"""Pair discovery in the EBB! layouts, the split rules, and bad-pair handling."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dbsi.train.data import EpochSampler, PairDataset, collate_pairs, load_pair, random_flips
from dbsi.train.pairs import BadPairs, discover_pairs, split_pairs, val294_pairs


def write_pair(base: Path, stem: str, size=(32, 48), value=100) -> None:
    for folder in ("original", "bokeh"):
        (base / folder).mkdir(parents=True, exist_ok=True)
        image = np.full((*size, 3), value, np.uint8)
        cv2.imwrite(str(base / folder / f"{stem}.jpg"), image)


@pytest.mark.parametrize("sub", ["Training", "train", ""])
def test_every_layout_is_found_and_paired_by_stem(tmp_path, sub):
    base = tmp_path / sub if sub else tmp_path
    for stem in ("0", "1", "10", "2"):
        write_pair(base, stem)
    bad = BadPairs()
    pairs = discover_pairs(tmp_path, bad)
    assert [p.stem for p in pairs] == ["0", "1", "2", "10"]
    assert all(p.original.stem == p.bokeh.stem for p in pairs)
    assert bad.report_new() is None


def test_a_root_without_a_layout_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="no EBB! layout"):
        discover_pairs(tmp_path, BadPairs())


def test_bad_pairs_are_skipped_and_reported_once(tmp_path):
    for stem in range(6):
        write_pair(tmp_path, str(stem))
    (tmp_path / "bokeh" / "0.jpg").unlink()  # unpaired
    data = (tmp_path / "original" / "1.jpg").read_bytes()
    (tmp_path / "original" / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "bokeh" / "2.jpg").write_bytes(b"not an image at all\xff\xd9")  # undecodable
    cv2.imwrite(str(tmp_path / "bokeh" / "3.jpg"), np.zeros((30, 48, 3), np.uint8))  # size
    bad = BadPairs()
    pairs = discover_pairs(tmp_path, bad)
    assert [p.stem for p in pairs] == ["1", "2", "3", "4", "5"]
    loader = DataLoader(PairDataset(pairs, (16, 32)), batch_size=5, collate_fn=collate_pairs)
    (batch,) = list(loader)
    assert batch.stems == ["4", "5"]
    assert batch.original.shape == (2, 3, 16, 32) and batch.original.dtype == torch.uint8
    for stem, reason in batch.bad:
        bad.add(stem, reason)
    line = bad.report_new(examples=2)
    assert line.startswith("skipped 4 bad pairs")
    assert "no bokeh image" in line and "truncated JPEG" in line and "(and 2 more)" in line
    assert bad.report_new() is None
    assert "differs from its bokeh" in bad.reasons["3"]
    assert "not a decodable image" in bad.reasons["2"]


def test_a_jpeg_with_bytes_after_its_end_marker_is_loaded(tmp_path):
    write_pair(tmp_path, "0")
    original = tmp_path / "original" / "0.jpg"
    original.write_bytes(original.read_bytes() + b"camera trailer \xff\xd8 more bytes")
    bad = BadPairs()
    pairs = discover_pairs(tmp_path, bad)
    loaded = load_pair(pairs[0], None)
    assert not isinstance(loaded, str), loaded
    assert loaded[0].shape == (32, 48, 3)
    assert bad.report_new() is None


def test_a_truncated_jpeg_is_known_by_its_bytes_not_its_name(tmp_path):
    write_pair(tmp_path, "0")
    data = (tmp_path / "original" / "0.jpg").read_bytes()
    (tmp_path / "original" / "0.jpg").unlink()
    (tmp_path / "original" / "0.png").write_bytes(data[: len(data) // 2])
    (pair,) = discover_pairs(tmp_path, BadPairs())
    assert load_pair(pair, None) == (
        f"{pair.original}: truncated JPEG (the data ends before its end-of-image marker)"
    )


def pairs_with_ids(tmp_path, ids):
    for i in ids:
        (tmp_path / "original").mkdir(exist_ok=True)
        (tmp_path / "bokeh").mkdir(exist_ok=True)
        (tmp_path / "original" / f"{i}.jpg").write_bytes(b"x")
        (tmp_path / "bokeh" / f"{i}.jpg").write_bytes(b"x")
    return discover_pairs(tmp_path, BadPairs())


def test_val294_split_when_its_ids_are_present(tmp_path):
    pairs = pairs_with_ids(tmp_path, list(range(4380, 4694)))
    train, val, how = split_pairs(pairs, seed=0)
    assert [p.stem for p in val] == [str(i) for i in range(4400, 4694)]
    assert [p.stem for p in train] == [str(i) for i in range(4380, 4400)]
    assert "Val294" in how


def test_a_partial_val294_falls_back_to_the_seeded_holdout(tmp_path):
    pairs = pairs_with_ids(tmp_path, list(range(4380, 4693)))  # 4693 missing
    assert val294_pairs(pairs) is None
    _, val, how = split_pairs(pairs, seed=0)
    assert "seeded holdout" in how and len(val) == round(len(pairs) * 0.1)


def test_seeded_holdout_otherwise_and_a_split_file_overrides(tmp_path):
    pairs = pairs_with_ids(tmp_path, range(40))
    train, val, _ = split_pairs(pairs, seed=3, val_fraction=0.25)
    again = split_pairs(pairs, seed=3, val_fraction=0.25)
    other = split_pairs(pairs, seed=4, val_fraction=0.25)
    assert len(val) == 10 and {p.stem for p in val}.isdisjoint(p.stem for p in train)
    assert [p.stem for p in again[1]] == [p.stem for p in val]
    assert [p.stem for p in other[1]] != [p.stem for p in val]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["1", "2"], "val": ["3", "99"]}))
    train, val, how = split_pairs(pairs, seed=3, split_file=split)
    assert [p.stem for p in train] == ["1", "2"] and [p.stem for p in val] == ["3"]
    assert str(split) in how


def test_epoch_sampler_shards_and_restarts_mid_epoch():
    whole = list(EpochSampler(10, seed=5))
    ranks = [EpochSampler(10, seed=5, rank=r, world=2) for r in range(2)]
    assert sorted(sum((list(s) for s in ranks), [])) == sorted(whole)
    restarted = EpochSampler(10, seed=5)
    restarted.set_epoch(0, start=4)
    assert list(restarted) == whole[4:]
    restarted.set_epoch(1)
    assert list(restarted) != whole


def test_flips_move_input_and_target_together():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    generator = torch.Generator().manual_seed(0)
    original, bokeh = random_flips(image, image.clone(), generator)
    assert torch.equal(original, bokeh)
    seen = set()
    for _ in range(10):
        flipped, _ = random_flips(image, image, generator)
        seen.add(tuple(torch.equal(flipped[i], image[i]) for i in range(2)))
    assert len(seen) > 1
