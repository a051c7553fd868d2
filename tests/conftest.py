"""Shared test inputs: real photos from scikit-image, the MegaDepth fixture, tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def real_photo(name: str) -> np.ndarray:
    """A real RGB uint8 photo shipped with scikit-image (astronaut, coffee, chelsea, rocket,
    motorcycle)."""
    from skimage import data

    if name == "motorcycle":
        left, _, _ = data.stereo_motorcycle()
        return left
    return getattr(data, name)()


@pytest.fixture(scope="session")
def megadepth_fixture() -> Path:
    return DATA / "megadepth_original_format.pth"


@pytest.fixture(scope="session")
def megadepth_probe() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "probe.npz"))
