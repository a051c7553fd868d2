"""Training pairs in the EBB! layouts: discovery by stem, bad-pair bookkeeping, and the
train/validation split (Val294, a seeded holdout, or a split file). No torch and no decoding:
``bokeh-bench quality`` finds its pairs here too.

Layouts read (docs/DESIGN.md section 3): AIM ``Training/original`` + ``Training/bokeh``, PyNET-Bokeh
``train/original`` + ``train/bokeh``, and any root holding ``original/`` and ``bokeh/`` (the
synthetic set's layout). Files pair by stem. A bad pair (unpaired, unreadable, truncated, or
with mismatched sizes) is counted, reported once with examples, and skipped: it never stops a
run.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from dbsi.runtime.images import IMAGE_EXTENSIONS

LAYOUTS = (
    ("Training", "original", "bokeh"),
    ("train", "original", "bokeh"),
    ("", "original", "bokeh"),
)
VAL294_IDS = range(4400, 4694)


@dataclasses.dataclass(frozen=True)
class Pair:
    stem: str
    original: Path
    bokeh: Path


@dataclasses.dataclass
class BadPairs:
    """Pairs skipped and why; each pair is reported once."""

    reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    reported: set[str] = dataclasses.field(default_factory=set)

    def add(self, stem: str, reason: str) -> None:
        self.reasons.setdefault(stem, reason)

    def report_new(self, examples: int = 3) -> str | None:
        """One line about the bad pairs not reported yet, or None."""
        new = [s for s in self.reasons if s not in self.reported]
        if not new:
            return None
        self.reported.update(new)
        shown = "; ".join(self.reasons[s] for s in new[:examples])
        more = f" (and {len(new) - examples} more)" if len(new) > examples else ""
        return f"skipped {len(new)} bad pair{'s' if len(new) > 1 else ''}: {shown}{more}"


def find_layout(root: str | Path) -> tuple[Path, Path]:
    """The ``original`` and ``bokeh`` folders under ``root``; ValueError naming what was tried."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such data folder")
    for parent, original, bokeh in LAYOUTS:
        base = root / parent if parent else root
        if (base / original).is_dir() and (base / bokeh).is_dir():
            return base / original, base / bokeh
    tried = ", ".join(str(Path(p) / "original") for p, _, _ in LAYOUTS)
    raise ValueError(f"{root}: no EBB! layout found (looked for {tried} with bokeh/ beside it)")


def images_by_stem(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    }


def stem_order(stem: str) -> tuple[int, int | str]:
    """Numeric stems in numeric order, then the rest by name."""
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def discover_pairs(root: str | Path, bad: BadPairs) -> list[Pair]:
    """Pairs under ``root`` matched by stem; unpaired and empty files go to ``bad``."""
    original_dir, bokeh_dir = find_layout(root)
    originals, bokehs = images_by_stem(original_dir), images_by_stem(bokeh_dir)
    pairs = []
    for stem in sorted(set(originals) | set(bokehs), key=stem_order):
        if stem not in bokehs:
            bad.add(stem, f"{originals[stem]}: no bokeh image with this stem")
        elif stem not in originals:
            bad.add(stem, f"{bokehs[stem]}: no original image with this stem")
        elif originals[stem].stat().st_size == 0 or bokehs[stem].stat().st_size == 0:
            empty = originals[stem] if originals[stem].stat().st_size == 0 else bokehs[stem]
            bad.add(stem, f"{empty}: empty file")
        else:
            pairs.append(Pair(stem, originals[stem], bokehs[stem]))
    return pairs


def read_split_file(split_file: str | Path) -> tuple[list[str], list[str]]:
    """(train stems, val stems) of a split file: JSON ``{"train": [stems], "val": [stems]}``,
    as ``bokeh-train run`` writes it to ``split.json``; ValueError naming the file otherwise."""
    try:
        split = json.loads(Path(split_file).read_text())
        return [str(s) for s in split["train"]], [str(s) for s in split["val"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{split_file}: not a split file (JSON with 'train' and 'val' lists): {exc}"
        ) from exc


def val294_pairs(pairs: list[Pair]) -> list[Pair] | None:
    """The paper's validation set, ids 4400-4693 in order, when all 294 have a pair; else None
    (a partial Val294 is not the paper's set, so it is never chosen silently)."""
    by_stem = {p.stem: p for p in pairs}
    if all(str(i) in by_stem for i in VAL294_IDS):
        return [by_stem[str(i)] for i in VAL294_IDS]
    return None


VAL294_RULE = "Val294 (ids 4400-4693, chosen because all 294 are present)"


def split_pairs(
    pairs: list[Pair], seed: int, val_fraction: float = 0.1, split_file: str | Path | None = None
) -> tuple[list[Pair], list[Pair], str]:
    """(train, val, how). A split file (see ``read_split_file``) wins; otherwise Val294 when
    ids 4400-4693 are all present (``val294_pairs``), else a seeded holdout."""
    by_stem = {p.stem: p for p in pairs}
    if split_file is not None:
        train_stems, val_stems = read_split_file(split_file)
        return (
            [by_stem[s] for s in train_stems if s in by_stem],
            [by_stem[s] for s in val_stems if s in by_stem],
            f"split file {split_file}",
        )
    val294 = val294_pairs(pairs)
    if val294 is not None:
        val_set = {p.stem for p in val294}
        return [p for p in pairs if p.stem not in val_set], val294, VAL294_RULE
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} usable pair(s): need at least 2 to split train/val")
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    val_stems = {p.stem for p in shuffled[:n_val]}
    train = [p for p in pairs if p.stem not in val_stems]
    val = [p for p in pairs if p.stem in val_stems]
    return train, val, f"seeded holdout ({n_val} of {len(pairs)}, seed {seed})"


def split_document(train: list[Pair], val: list[Pair]) -> dict[str, list[str]]:
    """The split as a split file holds it."""
    return {"train": [p.stem for p in train], "val": [p.stem for p in val]}
