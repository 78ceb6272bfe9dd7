"""Pictures of what the policy looks at: a video's frames in a grid, each with its patch drawn."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from adafocus.inference import early_exit
from adafocus.model import AdaFocus
from effvid.data import VideoClassificationDataset
from effvid.engine import autocast
from effvid.io import atomic_write_bytes

__all__ = ["patch_grid", "show_video", "to_uint8_frames", "write_png"]

Box = Sequence[int]  # [top, left, bottom, right) in frame pixels

PATCH_COLOUR = (40, 220, 40)  # RGB
MARK_COLOUR = (250, 200, 0)
CAPTION = 14  # pixels of caption strip under each frame


def to_uint8_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (T, 3, H, W) clip -> (T, H, W, 3) uint8 RGB."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (clip.float().cpu() * s + m).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _draw_box(image: np.ndarray, box: Box, scale: int, colour: tuple[int, int, int], width: int) -> None:
    top, left, bottom, right = (int(v) * scale for v in box)
    cv2.rectangle(image, (left, top), (right - 1, bottom - 1), colour, width)


def patch_grid(
    frames: np.ndarray,
    patches: Sequence[Box | None],
    *,
    captions: Sequence[str] | None = None,
    marks: Sequence[Box | None] | None = None,
    columns: int = 8,
    scale: int = 2,
) -> np.ndarray:
    """Tile ``frames`` (T, H, W, 3) uint8 into rows of ``columns``; draw each frame's patch (green)
    and, optionally, a mark (yellow; e.g. where the object is). A ``None`` patch (a step the video
    did not run) greys the frame out. Returns the picture (H', W', 3) uint8 RGB."""
    t, h, w, _ = frames.shape
    if len(patches) != t or (marks is not None and len(marks) != t):
        raise ValueError(f"need one patch (and mark) per frame: {t} frames, {len(patches)} patches")
    rows = -(-t // columns)
    cell_h, cell_w = h * scale + CAPTION, w * scale
    canvas = np.full((rows * (cell_h + 2), min(t, columns) * (cell_w + 2), 3), 255, dtype=np.uint8)
    for i in range(t):
        tile = cv2.resize(frames[i], (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        if patches[i] is None:
            tile = (0.35 * tile + 0.65 * 255).astype(np.uint8)
        else:
            _draw_box(tile, patches[i], scale, PATCH_COLOUR, max(1, scale))
        if marks is not None and marks[i] is not None:
            _draw_box(tile, marks[i], scale, MARK_COLOUR, 1)
        y, x = (i // columns) * (cell_h + 2), (i % columns) * (cell_w + 2)
        canvas[y : y + h * scale, x : x + w * scale] = tile
        text = captions[i] if captions is not None else f"t={i}"
        cv2.putText(
            canvas, text, (x + 2, y + h * scale + CAPTION - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1
        )
    return canvas


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB uint8 picture as PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, data.tobytes())


def show_video(
    model: AdaFocus,
    dataset: VideoClassificationDataset,
    index: int,
    path: str | Path,
    *,
    device: torch.device,
    policy: str = "argmax",
    threshold: float | None = None,
    skip_similarity: float | None = None,
    seed: int = 0,
    amp: str = "none",
    mean: tuple[float, ...] = (0.0, 0.0, 0.0),
    std: tuple[float, ...] = (1.0, 1.0, 1.0),
    marks: Sequence[Box | None] | None = None,
    columns: int = 8,
    scale: int = 2,
) -> dict:
    """Run video ``index`` and write the picture of its frames and patches to ``path`` (``mean`` /
    ``std``: the normalisation to undo; ``marks``: a box per frame to draw too; a skipped frame
    is greyed out like one after the exit); returns what was drawn (``patches``, ``exit_step``,
    ``probs``, ``label``)."""
    clip = dataset[index]["video"]
    model = model.to(device).eval()
    with torch.no_grad(), autocast(device, amp):
        result = early_exit(
            model,
            clip[None].to(device),
            threshold=threshold,
            skip_similarity=skip_similarity,
            policy=policy,
            generator=torch.Generator().manual_seed(seed),
        )
    steps = int(result.exit_step[0]) + 1
    p = model.patch_size
    skipped = result.skipped[0].tolist()
    patches = [
        [y, x, y + p, x + p] if t < steps and not skipped[t] else None
        for t, (y, x) in enumerate(result.top_left[0].tolist())
    ]
    probs = torch.softmax(result.step_logits[0], 1)
    label = int(dataset.records[index].labels[0])
    captions = [
        (f"t={t} skip" if skipped[t] else f"t={t} p={float(probs[t, label]):.2f}")
        if t < steps
        else f"t={t} (exited)"
        for t in range(len(patches))
    ]
    frames = to_uint8_frames(clip, mean, std)
    write_png(path, patch_grid(frames, patches, captions=captions, marks=marks, columns=columns, scale=scale))
    return {"patches": patches, "exit_step": steps - 1, "probs": result.probs[0].tolist(), "label": label}
