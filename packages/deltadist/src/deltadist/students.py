"""The parts of a delta layer other than the teacher: the low-rank student, its rank, its SVD
initialisation, and the gate that picks between the full-size and the low-rank student.

The low-rank student of a ``kh x kw`` convolution ``Cin -> Cout`` is two linear convolutions with
nothing in between (paper Fig. 3, "spatially separable low-rank")::

    (N, Cin, H, W) --[kh x 1, Cin -> r, no bias]--> (N, r, H', W) --[1 x kw, r -> Cout]--> (N, Cout, H', W')

stride, padding and dilation are split per axis. ``r`` is the teacher's channel count divided by
``factor_ch`` (the paper's gamma), by one of the original's two rules (see :func:`student_rank`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["Gate", "Reduction", "SeparableConv", "spatial_svd", "student_rank"]

Reduction = Literal["out", "min"]


def student_rank(
    in_channels: int, out_channels: int, factor_ch: int = 4, reduction: Reduction = "out"
) -> int:
    """Rank ``r`` of the low-rank student, as the original computes it.

    * ``"out"`` (segmentation, factor 4): ``Cout // f`` if ``Cout > f`` else ``Cout``;
    * ``"min"`` (detection, factor 16): ``m // f`` if ``m >= f`` else ``m``, ``m = min(Cin, Cout)``.

    The ``>`` / ``>=`` difference is the original's: ``out`` keeps ``Cout == f`` at full width,
    ``min`` reduces it to 1.
    """
    if factor_ch < 1:
        raise ValueError(f"factor_ch must be >= 1, got {factor_ch}")
    if reduction == "out":
        return out_channels // factor_ch if out_channels > factor_ch else out_channels
    if reduction == "min":
        m = min(in_channels, out_channels)
        return m // factor_ch if m >= factor_ch else m
    raise ValueError(f"reduction must be 'out' or 'min', got {reduction!r}")


@torch.no_grad()
def spatial_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor a kernel into the low-rank student's two kernels by truncated SVD.

    The kernel ``(Cout, Cin, kh, kw)`` is read as the matrix ``M[(Cin, kh), (Cout, kw)]``; its best
    rank-``r`` approximation ``U_r S_r V_r^T`` (Eckart-Young) is split as ``(U_r sqrt(S_r))`` and
    ``(sqrt(S_r) V_r^T)``, as in the original. The Frobenius error of the product is therefore the
    root-sum-square of the discarded singular values.

    Args:
        weight: ``(Cout, Cin, kh, kw)``, a convolution with ``groups == 1``.
        rank: ``r``; ranks beyond ``min(Cin*kh, Cout*kw)`` are padded with zero components, so the
            product is then exactly ``weight`` (the original asserted ``r <= Cin*kh`` instead).

    Returns:
        ``vertical`` ``(r, Cin, kh, 1)`` and ``horizontal`` ``(Cout, r, 1, kw)``, in ``weight``'s dtype.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a (Cout, Cin, kh, kw) kernel, got shape {tuple(weight.shape)}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    n, c, kh, kw = weight.shape
    matrix = weight.detach().to(torch.float64).permute(1, 2, 0, 3).reshape(c * kh, n * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    left = u[:, :k] * root  # (c*kh, k)
    right = root[:, None] * vh[:k]  # (k, n*kw)
    vertical = torch.zeros(rank, c, kh, 1, dtype=torch.float64, device=weight.device)
    horizontal = torch.zeros(n, rank, 1, kw, dtype=torch.float64, device=weight.device)
    vertical[:k] = left.reshape(c, kh, k).permute(2, 0, 1).unsqueeze(-1)
    horizontal[:, :k] = right.reshape(k, n, kw).permute(1, 0, 2).unsqueeze(2)
    return vertical.to(weight.dtype), horizontal.to(weight.dtype)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class SeparableConv(nn.Module):
    """The low-rank student: ``kh x 1`` (``Cin -> r``, no bias) then ``1 x kw`` (``r -> Cout``).

    Built from the teacher convolution whose geometry it copies; ``bias`` puts a bias on the
    second convolution (only the original's bias mode has one). Input ``(N, Cin, H, W)``, output
    the teacher's ``(N, Cout, H', W')``.
    """

    def __init__(self, teacher: nn.Conv2d, rank: int, *, bias: bool = False) -> None:
        super().__init__()
        if teacher.groups != 1:
            raise ValueError("the low-rank student needs groups == 1 (its SVD initialisation does)")
        if isinstance(teacher.padding, str) or teacher.padding_mode != "zeros":
            raise ValueError(
                "the low-rank student needs numeric zero padding (padding_mode='zeros'); got "
                f"padding={teacher.padding!r}, padding_mode={teacher.padding_mode!r}"
            )
        (kh, kw), (sh, sw) = _pair(teacher.kernel_size), _pair(teacher.stride)
        (ph, pw), (dh, dw) = _pair(teacher.padding), _pair(teacher.dilation)
        factory = {"device": teacher.weight.device, "dtype": teacher.weight.dtype}
        # zero padding per axis is exact: the first conv has no bias, so the columns the second
        # conv pads with zeros are what the first would have produced from zero columns
        self.vertical = nn.Conv2d(
            teacher.in_channels, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, **factory
        )
        self.horizontal = nn.Conv2d(
            rank, teacher.out_channels, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias, **factory
        )

    @property
    def rank(self) -> int:
        return self.vertical.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Cin, H, W) -> (N, Cout, H', W')."""
        return self.horizontal(self.vertical(x))

    @torch.no_grad()
    def init_from(self, teacher: nn.Conv2d) -> None:
        """Truncated spatial SVD of the teacher kernel; the bias (if any) copies the teacher's."""
        vertical, horizontal = spatial_svd(teacher.weight, self.rank)
        self.vertical.weight.copy_(vertical)
        self.horizontal.weight.copy_(horizontal)
        if self.horizontal.bias is not None:
            if teacher.bias is None:
                self.horizontal.bias.zero_()
            else:
                self.horizontal.bias.copy_(teacher.bias)

    def product_kernel(self) -> torch.Tensor:
        """The single ``(Cout, Cin, kh, kw)`` kernel this pair computes (for tests and analysis)."""
        v = self.vertical.weight[..., 0]  # (r, Cin, kh)
        h = self.horizontal.weight[:, :, 0]  # (Cout, r, kw)
        return torch.einsum("rch,orw->ochw", v, h)


class _HardStraightThrough(torch.autograd.Function):
    """``1[soft >= 0.5]`` forward (exactly 0. or 1.), the identity backward."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor) -> torch.Tensor:
        return (soft >= 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class Gate(nn.Module):
    """One learnable logit per layer choosing the student: **1 = full-size, 0 = low-rank**.

    Training: one hard sample per forward, shared by the whole batch, from a Gumbel-sigmoid
    (logistic noise, temperature 2/3 as in the original): ``1[sigmoid((logit + noise) / tau) >= 0.5]``
    forward, the soft sigmoid's gradient backward (straight-through). ``P(1) = sigmoid(logit)``
    whatever ``tau``. Eval: deterministic ``1[logit > 0]`` (the original's inference choice).
    """

    def __init__(self, init_logit: float = -1.0, temperature: float = 2 / 3) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.logit = nn.Parameter(torch.tensor(float(init_logit)))
        self.temperature = temperature

    def forward(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        """-> a 0-dim tensor, 0. or 1. ``noise`` (0-dim, logistic) replaces the random draw."""
        if not self.training:
            return (self.logit > 0).to(self.logit.dtype)
        if noise is None:
            # a difference of two Gumbel(0, 1) draws is Logistic(0, 1): log(u) - log(1 - u)
            u = torch.rand((), device=self.logit.device, dtype=self.logit.dtype).clamp(1e-6, 1 - 1e-6)
            noise = u.log() - (-u).log1p()
        return _HardStraightThrough.apply(torch.sigmoid((self.logit + noise) / self.temperature))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}"
