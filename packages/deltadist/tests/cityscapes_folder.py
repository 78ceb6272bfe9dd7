"""A tiny Cityscapes-format folder (leftImg8bit_sequence + gtFine labelIds) for the tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_cityscapes(
    root: Path, *, split: str = "val", size: tuple[int, int] = (24, 32), odd_frame: bool = False
) -> Path:
    """Two cities, one labelled frame each (frame 000019 of a 30-frame snippet starting at 000000).

    Frames: a smooth image drifting one pixel per frame; labelIds: road (7), car (26), sky (23),
    and 0 (unlabelled -> ignored). ``odd_frame``: one snippet frame of another size.
    """
    h, w = size
    rng = np.random.default_rng(0)
    for c, city in enumerate(("aachen", "bonn")):
        seq = root / "leftImg8bit_sequence" / split / city
        seq.mkdir(parents=True)
        base = cv2.resize(
            rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (w + 40, h), interpolation=cv2.INTER_LINEAR
        )
        for f in range(30):
            frame = np.ascontiguousarray(base[:, f : f + w])
            if odd_frame and c == 1 and f == 18:
                frame = cv2.resize(frame, (w + 2, h))
            cv2.imwrite(str(seq / f"{city}_000000_{f:06d}_leftImg8bit.png"), frame)
        gt = root / "gtFine" / split / city
        gt.mkdir(parents=True)
        label = np.full((h, w), 7, np.uint8)
        label[: h // 3] = 23
        label[h // 2 :, w // 4 : w // 2] = 26
        label[-2:] = 0
        cv2.imwrite(str(gt / f"{city}_000000_000019_gtFine_labelIds.png"), label)
    return root
