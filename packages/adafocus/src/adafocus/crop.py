"""Patch geometry: the grid of candidate positions, AdaFocus's hard crop and AdaFocusV2's
differentiable crop.

A position is ``a = (a_row, a_col)`` in ``[0, 1]^2``; the patch's top-left pixel is
``(floor(a_row * (H - P)), floor(a_col * (W - P)))``, so ``a = (0, 0)`` is the top-left corner and
``a = (1, 1)`` puts the patch flush with the bottom-right corner. The grid holds ``n x n`` positions
including both borders (``n = 7``: steps of 1/6), numbered row-major: action ``k`` is row ``k // n``,
column ``k % n``.

The original multiplies float32 positions by ``H - P`` and floors; we do the same arithmetic in
float32 so that offsets agree bit for bit (``5/6`` in float32 is just below 5/6). The original used
the frame height for both axes (its frames are square); here the column uses the width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "action_positions",
    "crop_patches",
    "crop_patches_differentiable",
    "grid_positions",
    "random_top_left",
    "top_left_from_positions",
]


def grid_positions(grid: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``grid x grid`` candidate positions, row-major -> float32 (grid**2, 2) of (a_row, a_col)."""
    if grid < 2:
        raise ValueError(f"the patch grid needs at least 2 positions per side (both borders), got {grid}")
    steps = [i / (grid - 1) for i in range(grid)]  # Python floats, then float32: as the original's literals
    table = [[r, c] for r in steps for c in steps]
    return torch.tensor(table, dtype=torch.float32, device=device)


def action_positions(actions: torch.Tensor, grid: int) -> torch.Tensor:
    """Action indices (...) in ``[0, grid**2)`` -> positions (..., 2) float32."""
    if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= grid * grid):
        raise ValueError(f"actions must lie in [0, {grid * grid}) for a {grid}x{grid} grid")
    return grid_positions(grid, device=actions.device)[actions.long()]


def _check_fits(height: int, width: int, patch_size: int) -> None:
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if patch_size > height or patch_size > width:
        raise ValueError(
            f"a {patch_size}x{patch_size} patch does not fit in a {height}x{width} frame; "
            "use frames at least as large as the patch"
        )


def top_left_from_positions(
    positions: torch.Tensor, frame_hw: tuple[int, int], patch_size: int
) -> torch.Tensor:
    """Positions (N, 2) in [0, 1] -> integer top-left corners (N, 2) int64 of (row y, column x)."""
    height, width = frame_hw
    _check_fits(height, width, patch_size)
    a = positions.to(torch.float32)
    span = torch.tensor([height - patch_size, width - patch_size], dtype=torch.float32, device=a.device)
    return torch.floor(a * span).long()


def crop_patches(frames: torch.Tensor, top_left: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Hard crop, one patch per frame, in one indexing op over the frames' windows.

    Args:
        frames: (N, C, H, W).
        top_left: (N, 2) integer (row y, column x) of each patch's top-left pixel.
        patch_size: P.

    Returns:
        (N, C, P, P); ``out[i] == frames[i, :, y_i:y_i+P, x_i:x_i+P]``. Gradients flow to ``frames``
        (not to the positions: the crop is a slice).
    """
    n, c, h, w = frames.shape
    _check_fits(h, w, patch_size)
    if top_left.shape != (n, 2):
        raise ValueError(f"top_left must have shape ({n}, 2), got {tuple(top_left.shape)}")
    top_left = top_left.to(device=frames.device, dtype=torch.long)
    y, x = top_left[:, 0], top_left[:, 1]
    if bool((y < 0).any() | (x < 0).any() | (y > h - patch_size).any() | (x > w - patch_size).any()):
        raise ValueError(f"a top-left corner puts a {patch_size}-pixel patch outside the {h}x{w} frame")
    # every P x P window as a view (N, C, H-P+1, W-P+1, P, P), then one window per frame: a copy of
    # N*C*P*P values (an index per output pixel, as a gather over the frame would need, is ~6x slower)
    windows = frames.unfold(2, patch_size, 1).unfold(3, patch_size, 1)
    return windows[torch.arange(n, device=frames.device), :, y, x]


def crop_patches_differentiable(
    frames: torch.Tensor, top_left: torch.Tensor, patch_size: int, *, mode: str = "bilinear"
) -> torch.Tensor:
    """AdaFocusV2's crop: ``affine_grid`` + ``grid_sample`` at real-valued top-left corners.

    Args:
        frames: (N, C, H, W).
        top_left: (N, 2) float (row y, column x) in pixels, in ``[0, H - P] x [0, W - P]``.
        patch_size: P.

    Returns:
        (N, C, P, P), differentiable with respect to ``frames`` and ``top_left``. At integer
        corners it equals :func:`crop_patches` (output pixel j samples input pixel centre
        ``x + j`` exactly).
    """
    n, c, h, w = frames.shape
    _check_fits(h, w, patch_size)
    if top_left.shape != (n, 2):
        raise ValueError(f"top_left must have shape ({n}, 2), got {tuple(top_left.shape)}")
    y, x = top_left[:, 0].to(frames.dtype), top_left[:, 1].to(frames.dtype)
    # align_corners=False: output pixel j sits at (2j+1)/P - 1; scale P/W and shift
    # (2x + P)/W - 1 map it to (2(x+j)+1)/W - 1, the centre of input pixel x + j.
    theta = torch.zeros(n, 2, 3, dtype=frames.dtype, device=frames.device)
    theta[:, 0, 0] = patch_size / w
    theta[:, 0, 2] = (2 * x + patch_size) / w - 1
    theta[:, 1, 1] = patch_size / h
    theta[:, 1, 2] = (2 * y + patch_size) / h - 1
    grid = F.affine_grid(theta, [n, c, patch_size, patch_size], align_corners=False)
    return F.grid_sample(frames, grid, mode=mode, padding_mode="border", align_corners=False)


def random_top_left(
    n: int, frame_hw: tuple[int, int], patch_size: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform random top-left corners (n, 2) int64, independent per frame.

    As the original (``randint(0, H - P)``, exclusive bound), the last offset ``H - P`` is never
    drawn; a patch as large as the frame has the single corner 0.
    """
    height, width = frame_hw
    _check_fits(height, width, patch_size)

    def draw(span: int) -> torch.Tensor:
        if span == 0:
            return torch.zeros(n, dtype=torch.long)
        return torch.randint(0, span, (n,), generator=generator)

    return torch.stack([draw(height - patch_size), draw(width - patch_size)], dim=1)
