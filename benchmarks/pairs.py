"""Which (original, bokeh) pairs to evaluate: the training data module's discovery
(``dbsi.train.data``: AIM ``Training/``, PyNET ``train/``, or plain ``original/`` + ``bokeh/``,
matched by stem) plus the choice of subset.

By default the AIM layout is evaluated on Val294 (ids 4400..4693, the paper's validation set)
when any of those ids is present; other layouts on every pair.
"""

from __future__ import annotations

from pathlib import Path

from dbsi.train.data import VAL294_IDS, BadPairs, Pair, discover_pairs, find_layout

SUBSETS = ("auto", "val294", "all")


def select_pairs(root: str | Path, subset: str = "auto") -> tuple[list[Pair], str, list[str]]:
    """(pairs, a description of what was chosen, reasons for files left out).

    ``subset``: "auto", "val294" or "all". ValueError naming the folder when nothing usable
    is there.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r} is not one of {', '.join(SUBSETS)}")
    original_dir, _ = find_layout(root)
    layout = {"Training": "AIM", "train": "PyNET"}.get(original_dir.parent.name, "plain")
    bad = BadPairs()
    pairs = discover_pairs(root, bad)
    val = [p for p in pairs if p.stem.isdigit() and int(p.stem) in VAL294_IDS]
    if subset == "val294" or (subset == "auto" and layout == "AIM" and val):
        if not val:
            raise ValueError(f"{original_dir.parent}: none of the Val294 ids 4400..4693 has a pair")
        pairs, chosen = val, f"{layout} layout, Val294 ({len(val)} of ids 4400..4693)"
    else:
        chosen = f"{layout} layout, all {len(pairs)} pairs"
    if not pairs:
        raise ValueError(f"{original_dir.parent}: no original/bokeh pairs with matching names")
    return pairs, f"{original_dir.parent}: {chosen}", list(bad.reasons.values())
