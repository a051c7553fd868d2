"""Write the real photos that ship with scikit-image as JPEGs, for the demo to render."""

import sys
from pathlib import Path

import cv2
from skimage import data

from dbsi.runtime.atomic import atomic_path


def main(out: Path) -> None:
    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
    }
    for name, rgb in photos.items():
        path = out / f"{name}.jpg"
        if not path.exists():
            with atomic_path(path) as tmp:
                cv2.imwrite(
                    str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
                )
    print(f"{len(photos)} photos in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
