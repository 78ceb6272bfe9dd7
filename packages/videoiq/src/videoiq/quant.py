"""Any-precision quantisers: DoReFa weights truncated from the family's largest bit width, PACT
activations with a learned clip per bit width, and BatchNorm switched by bit width.

One set of full-precision weights serves every bit width of a *family* such as ``(32, 4, 2)``::

    w --tanh, /2max|.|, +0.5--> x in [0, 1] --round at B = max(family)--> q_B
      --floor(q_B / 2^(B-b)) * 2^(B-b)--> q_b --/(2^B-1), mean-rescale--> x_b --2x-1--> w_b in [-1, 1]

    a (>= 0) --clip to [0, alpha_b]--> round((2^b-1)/alpha_b * a) * alpha_b/(2^b-1)

Only weights are truncated; each activation bit width has its own clip ``alpha_b``. Gradients are
straight-through: identity through the rounding of weights; PACT passes the gradient to inputs in
``[0, alpha]`` and the sum over inputs ``>= alpha`` to ``alpha``.

The float32 operation order follows the original (sunxm2357/VideoIQ, ``ops/imagenet_pact.py``)
exactly, because the 4- and 2-bit branches turn a 1-ulp difference into a whole quantisation step:
PACT's scale is ``reciprocal(alpha) * (2^b - 1)`` (what ``int / tensor`` computes in torch), the
weight scale is ``2^B - 1`` rounded to float32 (``2^32`` for B = 32), and the mean-rescale
``x * m2 / m3`` is applied even when it is mathematically 1.

Inference (no autograd) computes the same functions with less work: a :class:`QConv2d` in eval mode
quantises its weight once per bit width and reuses it while its parameter is unchanged (same
tensor, same ``_version``; cleared by ``train()``/``eval()`` switches and ``load_state_dict``), and
:func:`pact` works in place with a precomputed scale. Both give bit-identical outputs (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "BitSwitchable",
    "PACT",
    "QConv2d",
    "SwitchableBatchNorm2d",
    "check_family",
    "clear_inference_caches",
    "dorefa_weight",
    "pact",
    "set_bit_width",
]


def check_family(family: Sequence[int]) -> tuple[int, ...]:
    """Validate a bit-width family: distinct integers in [2, 32], largest first (the original's
    teacher and KD target are tied to the first entry being the largest)."""
    fam = tuple(int(b) for b in family)
    if not fam:
        raise ValueError("bit_width_family is empty")
    if len(set(fam)) != len(fam):
        raise ValueError(f"bit_width_family {fam} repeats a bit width")
    if any(not 2 <= b <= 32 for b in fam):
        raise ValueError(f"bit widths must lie in [2, 32], got {fam}")
    if fam[0] != max(fam):
        raise ValueError(f"bit_width_family must start with its largest bit width, got {fam}")
    return fam


def _float32(n: int) -> float:
    # the original gets the weight scale as a float32 tensor's .item(): 2**32 - 1 becomes 2**32
    return torch.tensor(float(n), dtype=torch.float32).item()


class _TruncateSTE(torch.autograd.Function):
    """x in [0, 1] -> round at scale, floor to a coarser grid by d, dequantise, mean-rescale."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, d: int, mean_aligned: bool) -> torch.Tensor:
        q_hi = torch.round(scale * x)
        m2 = (q_hi / scale).mean()
        q_lo = torch.floor(q_hi / d) * d if d != 1 else q_hi
        out = q_lo / scale
        m3 = out.mean()
        ref = x.mean() if mean_aligned else m2
        return torch.where(m3 != 0, out * ref / m3, out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None, None


def dorefa_weight(
    weight: torch.Tensor, bits: int, max_bits: int, *, mean_aligned: bool = False
) -> torch.Tensor:
    """Quantised weight (same shape, values in [-1, 1]) at ``bits`` from the ``max_bits`` grid.

    Per tensor: ``x = tanh(w) / (2 max|tanh(w)|) + 0.5``; ``q = round((2^B-1) x)``; truncate the
    ``B - b`` least significant bits; dequantise; rescale by ``mean(q_B) / mean(q_b)`` (by
    ``mean(x) / mean(q_b)`` with ``mean_aligned``); map to ``2x - 1``. With B = 32 nothing rounds
    (float32), so the 32-bit weight is ``tanh(w) / max|tanh(w)|`` up to float rounding.
    """
    if not 2 <= bits <= max_bits <= 32:
        raise ValueError(f"need 2 <= bits <= max_bits <= 32, got bits={bits}, max_bits={max_bits}")
    u = weight.tanh()
    x = u / (2 * u.abs().max()) + 0.5
    x = _TruncateSTE.apply(x, _float32(2**max_bits - 1), 2 ** (max_bits - bits), mean_aligned)
    return 2 * x - 1


_PACT_NEGATIVE = "PACT is single-sided: its input must be non-negative (place it after a ReLU)"


def _pact_scale(alpha: torch.Tensor, bits: int) -> torch.Tensor:
    n = 2**bits - 1
    diff = alpha.clamp_min(0)
    diff = torch.where(diff == 0, n, diff)  # a zero clip: the original sets the range to n
    return diff.reciprocal() * n  # the original's `n / diff`: torch computes reciprocal * n


def _pact_inference(
    x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, mean_aligned: bool
) -> torch.Tensor:
    """:class:`_PACTSTE`'s forward without autograd, in place on one new tensor: the same float32
    operations on the same operands (``min(x, alpha)`` for ``where(x > alpha, alpha, x)``; a
    Python test of ``m != 0`` for the tensor ``where``), so the same values. Needs ``x`` contiguous
    and of ``alpha``'s dtype (else the in-place ops could keep another dtype or order) and a clip
    that is not NaN (``where`` and ``min`` differ there)."""
    out = torch.clamp_max(x, alpha)
    out.mul_(scale).round_().div_(scale)
    m = out.mean()
    ref = x.mean() if mean_aligned else m
    if bool(m != 0):
        out.mul_(ref).div_(m)
    return out


def _pact_fast(x: torch.Tensor, alpha: torch.Tensor) -> bool:
    """Whether :func:`_pact_inference` applies: no autograd, a contiguous CPU/GPU float input of
    the clip's dtype and device."""
    return (
        not torch.is_grad_enabled()
        and x.device.type != "meta"
        and x.device == alpha.device
        and x.dtype == alpha.dtype
        and x.is_contiguous()
    )


class _PACTSTE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, alpha: torch.Tensor, bits: int, check: bool, mean_aligned: bool
    ) -> torch.Tensor:
        if check and x.device.type != "meta" and bool(x.min() < 0):
            raise ValueError(_PACT_NEGATIVE)
        ctx.save_for_backward(x, alpha)
        scale = _pact_scale(alpha, bits)
        clipped = torch.where(x > alpha, alpha, x)
        q = torch.round(scale * clipped)
        out = q / scale
        m = out.mean()
        # the original rescales by mean(before truncation) / mean(after); with no truncation the
        # two means are equal, but (out * m) / m still rounds, and that rounding is reproduced.
        # --mean_aligned rescales to the mean of the unclipped input instead
        ref = x.mean() if mean_aligned else m
        return torch.where(m != 0, out * ref / m, out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        zero = torch.zeros_like(grad)
        grad_x = torch.where((x < 0) | (x > alpha), zero, grad)
        grad_alpha = torch.where(x < alpha, zero, grad).sum().reshape(1).expand_as(alpha)
        return grad_x, grad_alpha, None, None, None


def pact(
    x: torch.Tensor,
    alpha: torch.Tensor,
    bits: int,
    *,
    check_nonnegative: bool = True,
    mean_aligned: bool = False,
) -> torch.Tensor:
    """PACT: clip ``x >= 0`` (any shape) to ``[0, alpha]`` (``alpha`` shape (1,)) and quantise to
    ``2^bits`` levels. ``d/dx`` = 1 on ``[0, alpha]``; ``d/d alpha`` = sum of the incoming gradient
    where ``x >= alpha``. ``mean_aligned`` rescales the output to the mean of ``x``.

    Without autograd the same values come from an in-place path (fewer passes over ``x``)."""
    if _pact_fast(x, alpha) and not bool(torch.isnan(alpha).any()):
        if check_nonnegative and bool(x.min() < 0):
            raise ValueError(_PACT_NEGATIVE)
        return _pact_inference(x, alpha, _pact_scale(alpha, bits), mean_aligned)
    return _PACTSTE.apply(x, alpha, bits, check_nonnegative, mean_aligned)


class BitSwitchable:
    """Mixin of modules that follow the active bit width of their ``family``."""

    family: tuple[int, ...]
    bit_width: int

    def _init_bits(self, family: Sequence[int]) -> None:
        self.family = check_family(family)
        self.bit_width = self.family[0]

    @property
    def max_bits(self) -> int:
        return self.family[0]


class _EvalCache:
    """Mixin of modules (before ``nn.Module`` in the bases) that keep values derived from one of
    their parameters at inference: in eval mode without autograd, :meth:`_cached` computes a value
    once and returns it while the parameter is the same tensor with the same ``_version`` (which
    every in-place write through autograd's view of it bumps: optimiser steps, ``copy_`` under
    ``no_grad``), storage, dtype and device. Switching ``train()``/``eval()`` and
    ``load_state_dict`` clear it. In training or with autograd on nothing is cached. Writes through
    ``param.data`` bypass the version counter: call :func:`clear_inference_caches` after them."""

    training: bool

    def _cached(self, name: object, param: torch.Tensor, compute):
        if self.training or torch.is_grad_enabled() or param.device.type == "meta":
            return compute()
        cache = self.__dict__.setdefault("_eval_cache", {})
        key = (param._version, param.data_ptr(), param.dtype, param.device)
        hit = cache.get(name)
        if hit is not None and hit[0] is param and hit[1] == key:
            return hit[2]
        value = compute()
        cache[name] = (param, key, value)
        return value

    def clear_eval_cache(self) -> None:
        self.__dict__.get("_eval_cache", {}).clear()

    def train(self, mode: bool = True):
        if mode != self.training:
            self.clear_eval_cache()
        return super().train(mode)  # type: ignore[misc]

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_eval_cache()
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]


def clear_inference_caches(model: nn.Module) -> int:
    """Drop the quantised weights and PACT scales cached by ``model``'s modules (needed only after
    writing a parameter through ``.data``, which its version counter does not see); returns how
    many caching modules it found."""
    found = [m for m in model.modules() if isinstance(m, _EvalCache)]
    for m in found:
        m.clear_eval_cache()
    return len(found)


def set_bit_width(model: nn.Module, bits: int) -> int:
    """Make every :class:`BitSwitchable` module of ``model`` run at ``bits``; returns how many.

    Raises ``ValueError`` if one of them lacks ``bits`` in its family (a typo would otherwise run
    the wrong branch silently)."""
    found = [m for m in model.modules() if isinstance(m, BitSwitchable)]
    for m in found:
        if bits not in m.family:
            raise ValueError(f"bit width {bits} is not in the family {m.family} of {type(m).__name__}")
        m.bit_width = bits
    return len(found)


class QConv2d(BitSwitchable, _EvalCache, nn.Conv2d):
    """``nn.Conv2d`` whose weight is quantised by :func:`dorefa_weight` at the active bit width.

    In eval mode without autograd the quantised weight of each bit width is computed once and
    reused until the weight changes (:class:`_EvalCache`); do not modify it in place.

    The parameter is the full-precision ``weight`` (same name and shape as the conv it replaces).
    Input (N, C_in, H, W) -> (N, C_out, H', W').
    """

    def __init__(self, *args, family: Sequence[int], mean_aligned: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_bits(family)
        self.mean_aligned = mean_aligned

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, family: Sequence[int], *, mean_aligned: bool = False) -> QConv2d:
        """Wrap ``conv``'s own parameters (shared, not copied)."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
            family=family,
            mean_aligned=mean_aligned,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        return q

    def quantised_weight(self) -> torch.Tensor:
        bits, max_bits, aligned = self.bit_width, self.max_bits, self.mean_aligned
        return self._cached(
            (bits, max_bits, aligned),
            self.weight,
            lambda: dorefa_weight(self.weight, bits, max_bits, mean_aligned=aligned),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantised_weight(), self.bias)

    def revert(self) -> nn.Conv2d:
        """A plain conv holding the same full-precision parameters."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device="meta",
        )
        conv.weight, conv.bias = self.weight, self.bias
        return conv

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, family={self.family}, bit_width={self.bit_width}"


class SwitchableBatchNorm2d(BitSwitchable, nn.Module):
    """One ``BatchNorm2d`` per bit width (``bns["4"]``...), the active one applied: (N, C, H, W)."""

    def __init__(self, num_features: int, family: Sequence[int], **bn_kwargs) -> None:
        super().__init__()
        self._init_bits(family)
        self.bns = nn.ModuleDict({str(b): nn.BatchNorm2d(num_features, **bn_kwargs) for b in self.family})

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, family: Sequence[int]) -> SwitchableBatchNorm2d:
        """Every bit width starts as a copy of ``bn`` (the original starts all of them from the
        full-precision checkpoint's BN)."""
        sbn = cls(bn.num_features, family, device="meta")
        sbn.bns = nn.ModuleDict({str(b): copy.deepcopy(bn) for b in sbn.family})
        return sbn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[str(self.bit_width)](x)

    def revert(self) -> nn.BatchNorm2d:
        """The BN of the largest bit width."""
        return self.bns[str(self.max_bits)]


class PACT(BitSwitchable, _EvalCache, nn.Module):
    """PACT activation quantiser with a learned clip per bit width: ``clips["4"]`` of shape (1,).

    In eval mode without autograd the scale of each bit width is computed once and reused until its
    clip changes (:class:`_EvalCache`).

    Args:
        family: the bit widths.
        init: the initial clip, one value for all bit widths or one per bit width (``--q_init``).
    """

    def __init__(
        self, family: Sequence[int], init: float | Sequence[float] = 2.0, *, mean_aligned: bool = False
    ) -> None:
        super().__init__()
        self.mean_aligned = mean_aligned
        self._init_bits(family)
        inits = (
            [float(init)] * len(self.family) if isinstance(init, int | float) else [float(v) for v in init]
        )
        if len(inits) != len(self.family):
            raise ValueError(f"{len(inits)} initial clips for the family {self.family}")
        self.clips = nn.ParameterDict(
            {str(b): nn.Parameter(torch.full((1,), v)) for b, v in zip(self.family, inits)}
        )
        self.check_nonnegative = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.bit_width
        alpha = self.clips[str(bits)]
        if _pact_fast(x, alpha):
            scale = self._cached(
                bits, alpha, lambda: None if bool(torch.isnan(alpha).any()) else _pact_scale(alpha, bits)
            )
            if scale is not None:
                if self.check_nonnegative and bool(x.min() < 0):
                    raise ValueError(_PACT_NEGATIVE)
                return _pact_inference(x, alpha, scale, self.mean_aligned)
        return pact(
            x,
            alpha,
            self.bit_width,
            check_nonnegative=self.check_nonnegative,
            mean_aligned=self.mean_aligned,
        )
