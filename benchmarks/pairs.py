"""Which (original, bokeh) pairs to evaluate: the training data module's discovery
(``dbsi.train.pairs``: AIM ``Training/``, PyNET ``train/``, or plain ``original/`` + ``bokeh/``,
matched by stem) plus the choice of subset.

The Val294 rule is the training split's (``dbsi.train.pairs.val294_pairs``): with every id
4400..4693 present, "auto" evaluates those 294 pairs (the paper's validation set), whatever the
layout; otherwise every pair. A training run's ``split.json`` selects its validation stems.
"""

from __future__ import annotations

from pathlib import Path

from dbsi.train.pairs import (
    VAL294_IDS,
    VAL294_RULE,
    BadPairs,
    Pair,
    discover_pairs,
    find_layout,
    read_split_file,
    val294_pairs,
)

SUBSETS = ("auto", "val294", "all")


def select_pairs(
    root: str | Path, subset: str = "auto", split_file: str | Path | None = None
) -> tuple[list[Pair], str, list[str]]:
    """(pairs, a description of what was chosen, reasons for files left out).

    ``subset``: "auto", "val294" or "all"; ``split_file`` (a training run's ``split.json``)
    selects its ``val`` stems instead. ValueError naming the folder or file when nothing usable
    is there.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r} is not one of {', '.join(SUBSETS)}")
    original_dir, _ = find_layout(root)
    layout = {"Training": "AIM", "train": "PyNET"}.get(original_dir.parent.name, "plain")
    bad = BadPairs()
    pairs = discover_pairs(root, bad)
    left_out = list(bad.reasons.values())
    if split_file is not None:
        _, val_stems = read_split_file(split_file)
        by_stem = {p.stem: p for p in pairs}
        missing = [s for s in val_stems if s not in by_stem]
        left_out += [f"{split_file}: val stem {s!r} has no usable pair in {root}" for s in missing]
        pairs = [by_stem[s] for s in val_stems if s in by_stem]
        chosen = f"{layout} layout, the {len(pairs)} val pairs of split file {split_file}"
        if not pairs:
            raise ValueError(f"{split_file}: none of its val stems has a pair in {root}")
    elif subset in ("auto", "val294") and (val := val294_pairs(pairs)) is not None:
        pairs, chosen = val, f"{layout} layout, {VAL294_RULE}"
    elif subset == "val294":
        have = sum(p.stem.isdigit() and int(p.stem) in VAL294_IDS for p in pairs)
        raise ValueError(
            f"{original_dir.parent}: Val294 needs every id 4400..4693; {have} of 294 have a pair"
        )
    else:
        rule = "" if subset == "all" else " (not all Val294 ids 4400..4693 are present)"
        chosen = f"{layout} layout, all {len(pairs)} pairs{rule}"
    if not pairs:
        raise ValueError(f"{original_dir.parent}: no original/bokeh pairs with matching names")
    return pairs, f"{original_dir.parent}: {chosen}", left_out
