"""Patch geometry: grid, coordinate convention, hard crop at the borders, differentiable crop."""

from __future__ import annotations

import pytest
import torch

from adafocus.crop import (
    action_positions,
    crop_patches,
    crop_patches_differentiable,
    grid_positions,
    random_top_left,
    top_left_from_positions,
)


def test_grid_is_row_major_with_both_borders():
    g = grid_positions(7)
    assert g.shape == (49, 2) and g.dtype == torch.float32
    assert g[0].tolist() == [0.0, 0.0] and g[6].tolist() == [0.0, 1.0] and g[48].tolist() == [1.0, 1.0]
    # action k -> row k // 7, column k % 7
    assert torch.allclose(g[10], torch.tensor([1 / 6, 3 / 6]))
    assert torch.equal(action_positions(torch.tensor([[10, 42]]), 7), g[[10, 42]][None])
    with pytest.raises(ValueError, match="at least 2 positions"):
        grid_positions(1)
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 49\)"):
        action_positions(torch.tensor([49]), 7)


@pytest.mark.parametrize(
    "patch, expected",
    [
        (128, [0, 16, 32, 48, 64, 80, 96]),  # 224 - 128 = 96 = 6 x 16: the grid stride is 16 px
        (96, [0, 21, 42, 64, 85, 106, 128]),  # 128 / 6 = 21.33: floor
        (160, [0, 10, 21, 32, 42, 53, 64]),  # 64 / 6 = 10.67
        (192, [0, 5, 10, 16, 21, 26, 32]),
    ],
)
def test_top_left_offsets_hand_computed_at_224(patch, expected):
    g = grid_positions(7)
    tl = top_left_from_positions(g, (224, 224), patch)
    assert tl[:7, 1].tolist() == expected  # first grid row: columns vary
    assert tl[::7, 0].tolist() == expected  # first grid column: rows vary
    assert tl[:7, 0].eq(0).all() and tl[::7, 1].eq(0).all()


def test_non_square_frames_use_height_for_rows_and_width_for_columns():
    tl = top_left_from_positions(torch.tensor([[0.5, 1.0], [1.0, 0.25]]), (40, 64), 16)
    assert tl.tolist() == [[12, 48], [24, 12]]


def test_hard_crop_matches_slicing_at_corners_and_borders():
    frames = torch.arange(3 * 2 * 10 * 12, dtype=torch.float32).view(3, 2, 10, 12)
    tl = torch.tensor([[0, 0], [6, 8], [3, 5]])  # top-left corner, bottom-right border, inside
    patches = crop_patches(frames, tl, 4)
    assert patches.shape == (3, 2, 4, 4)
    for i, (y, x) in enumerate(tl.tolist()):
        assert torch.equal(patches[i], frames[i, :, y : y + 4, x : x + 4])
    assert patches[1, 0, -1, -1] == frames[1, 0, 9, 11]  # the very last pixel is reachable
    # the patch as large as the frame is the frame
    assert torch.equal(crop_patches(frames, torch.zeros(3, 2, dtype=torch.long), 10), frames[..., :10])


def test_hard_crop_errors_and_gradients():
    frames = torch.zeros(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match="a 9x9 patch does not fit in a 8x8 frame"):
        crop_patches(frames, torch.zeros(2, 2, dtype=torch.long), 9)
    with pytest.raises(ValueError, match="outside the 8x8 frame"):
        crop_patches(frames, torch.tensor([[0, 0], [0, 5]]), 4)
    with pytest.raises(ValueError, match="does not fit"):
        top_left_from_positions(torch.zeros(1, 2), (64, 32), 48)
    patches = crop_patches(frames, torch.tensor([[1, 2], [4, 4]]), 4)
    patches.sum().backward()
    assert frames.grad[0].sum() == 3 * 16 and frames.grad[0, 0, 1, 2] == 1 and frames.grad[0, 0, 0, 0] == 0


def test_differentiable_crop_equals_hard_crop_at_integer_corners():
    torch.manual_seed(0)
    frames = torch.randn(5, 3, 24, 32)
    tl = torch.tensor([[0, 0], [8, 16], [3, 7], [0, 16], [8, 0]])  # includes both far borders
    hard = crop_patches(frames, tl, 16)
    soft = crop_patches_differentiable(frames, tl.float(), 16)
    torch.testing.assert_close(soft, hard, atol=1e-5, rtol=0)
    # the grid positions at 224 / P=128 are integer-aligned (stride 16): same patches there too.
    # float32 sampling coordinates on a 224-wide frame are off by ~1e-5 px, hence the tolerance.
    big = torch.randn(3, 3, 224, 224)
    corners = top_left_from_positions(grid_positions(7)[[0, 24, 48]], (224, 224), 128)
    soft = crop_patches_differentiable(big.double(), corners.double(), 128)
    torch.testing.assert_close(soft, crop_patches(big, corners, 128).double(), atol=1e-9, rtol=0)
    soft32 = crop_patches_differentiable(big, corners.float(), 128)
    torch.testing.assert_close(soft32, crop_patches(big, corners, 128), atol=1e-3, rtol=0)


def test_differentiable_crop_interpolates_and_passes_gradients_to_the_corner():
    frames = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(1, 1, 4, 8).contiguous()
    tl = torch.tensor([[0.0, 2.5]], requires_grad=True)
    patch = crop_patches_differentiable(frames, tl, 2)
    # columns 2.5 and 3.5 of a ramp with value = column index
    torch.testing.assert_close(patch[0, 0, 0], torch.tensor([2.5, 3.5]))
    patch.sum().backward()
    assert tl.grad[0, 1].item() == pytest.approx(4.0)  # 4 pixels, each d(value)/dx = 1
    assert tl.grad[0, 0].item() == pytest.approx(0.0)


def test_random_top_left_never_draws_the_last_offset():
    g = torch.Generator().manual_seed(0)
    tl = random_top_left(4000, (10, 7), 4, generator=g)
    assert tl[:, 0].min() == 0 and tl[:, 0].max() == 5  # randint(0, 6): 6 excluded, as the original
    assert tl[:, 1].max() == 2
    assert random_top_left(3, (4, 9), 4).eq(0)[:, 0].all()
