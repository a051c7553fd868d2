"""Find (original, bokeh) image pairs in an EBB!-layout folder.

Minimal discovery for evaluation (``dbsi.train`` has no data module to share yet): pairs are
matched by file stem.

- AIM 2019/2020: ``ROOT/Training/{original,bokeh}/{i}.jpg``; by default only Val294, ids
  4400..4693, when any of them is present (the paper's validation set).
- PyNET-Bokeh: ``ROOT/train/{original,bokeh}/{i}.jpg`` (and ``test/``).
- Any folder with ``original/`` and ``bokeh/`` (e.g. ``bokeh-train synth`` output).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VAL294 = range(4400, 4694)


@dataclasses.dataclass(frozen=True)
class Pair:
    name: str
    original: Path
    bokeh: Path


def images_by_stem(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def pair_root(root: Path) -> tuple[Path, str]:
    """The folder holding ``original/`` and ``bokeh/``, and the layout's name."""
    for sub, layout in (("Training", "AIM"), ("train", "PyNET"), (".", "plain")):
        folder = (root / sub).resolve() if sub != "." else root
        if (folder / "original").is_dir() and (folder / "bokeh").is_dir():
            return folder, layout
    raise ValueError(
        f"{root}: no EBB! layout found (expected Training/original + Training/bokeh, "
        "train/original + train/bokeh, or original/ + bokeh/)"
    )


def stem_order(stem: str) -> tuple[int, int | str]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def discover_pairs(root: str | Path, subset: str = "auto") -> tuple[list[Pair], str]:
    """Pairs under ``root`` and a description of what was chosen.

    ``subset``: "auto" (Val294 for the AIM layout when present, else every pair), "val294" or
    "all". ValueError naming the folder when nothing usable is there.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    if subset not in ("auto", "val294", "all"):
        raise ValueError(f"subset {subset!r} is not one of auto, val294, all")
    folder, layout = pair_root(root)
    originals = images_by_stem(folder / "original")
    targets = images_by_stem(folder / "bokeh")
    stems = sorted(set(originals) & set(targets), key=stem_order)
    val = [s for s in stems if s.isdigit() and int(s) in VAL294]
    if subset == "val294" or (subset == "auto" and layout == "AIM" and val):
        if not val:
            raise ValueError(f"{folder}: none of the Val294 ids 4400..4693 has a pair")
        stems, chosen = val, f"{layout} layout, Val294 ({len(val)} of ids 4400..4693)"
    else:
        chosen = f"{layout} layout, all {len(stems)} pairs"
    if not stems:
        raise ValueError(f"{folder}: no original/bokeh pairs with matching names")
    return [Pair(s, originals[s], targets[s]) for s in stems], f"{folder}: {chosen}"
