"""A real integer path for the low-bit branches: one bit width (<= 8) of an any-precision ResNet
converted to PyTorch's quantised CPU kernels (``torch.ao``, engine ``x86``/``fbgemm`` or
``onednn``), so that a frame the policy sends to 4 bits runs int8 convolutions instead of float
ones with simulated quantisers.

What maps exactly and what does not:

* activations: PACT's output at b <= 8 bits lies on the grid ``k * alpha / (2^b - 1)``,
  ``k = 0 .. 2^b - 1``; a ``quint8`` tensor of scale ``alpha / (2^b - 1)`` and zero point 0 holds
  it exactly. Each convolution's (or residual sum's) output is requantised straight onto the next
  PACT's grid and clamped at its clip, which is PACT itself (ReLU included);
* weights: the DoReFa weight of the bit width (at most ``2^b`` levels), BatchNorm folded in, is
  stored per output channel as ``qint8``. Its levels are an affine grid whose zero point is not an
  integer, so they are rounded to the int8 grid: an error of at most half an int8 step, 1/254 of
  the channel's largest folded weight;
* the tensors no PACT follows (the residual branch's ``conv2``/``bn2`` output, the downsample
  output, the last block's output) get a ``quint8`` scale from a calibration batch
  (``torch.ao`` min/max observers), their rounding adds a little more error;
* PACT's mean-rescale ``x * m / m`` (1 up to a float32 ulp) is not reproduced; ``mean_aligned``
  networks, whose rescale is a real factor, are refused;
* the stem (conv1, bn1, max pool) and the classifier stay float, as in the original.

No kernel is faster for fewer bits: PyTorch's CPU backend has int8 (``quint8 x qint8``) kernels
only, so the 4-bit and 2-bit branches run exactly as fast as an 8-bit one would (their values
simply use fewer of the 256 levels), and bit widths above 8 (the 32-bit member) have no integer
path at all and stay on the fake-quantised float path.

    branch = Int8Branch(recognizer, bits=4, calibration=frames)   # frames (N, 3, H, W)
    feats = branch(frames)                                          # (N, F) like frame_features
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from torch import nn
from torch.ao.quantization.observer import MinMaxObserver

from videoiq.model import AnyPrecisionBlock, AnyPrecisionResNet, _pool
from videoiq.quant import PACT

__all__ = ["MAX_INT_BITS", "Int8Branch", "quantized_engine"]

MAX_INT_BITS = 8  # the widest activation grid a quint8 tensor holds exactly


@contextmanager
def quantized_engine(name: str | None):
    """Use the quantised CPU engine ``name`` (``x86``, ``fbgemm``, ``onednn``...) inside the block."""
    if name is None:
        yield
        return
    if name not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantized engine '{name}' is not available here; supported: "
            f"{', '.join(torch.backends.quantized.supported_engines)}"
        )
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def _grid(pact: PACT, bits: int) -> tuple[float, float]:
    """(scale, clip) of a PACT quantiser's grid at ``bits``."""
    alpha = float(pact.clips[str(bits)].detach().clamp_min(0))
    if alpha <= 0:
        raise ValueError("a PACT clip is <= 0; the int8 path needs positive clips")
    return alpha / (2**bits - 1), alpha


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The DoReFa weight at ``bits`` with the (eval-mode) BatchNorm folded in, per-channel int8."""
    w = conv.quantised_weight().detach()  # QConv2d at the active bit width
    inv = (bn.running_var + bn.eps).rsqrt() * bn.weight.detach()
    w = w * inv[:, None, None, None]
    bias = bn.bias.detach() - bn.running_mean * inv
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * inv
    scales = (w.abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12).double()
    qw = torch.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
    return qw, bias.float()


def _qconv(conv: nn.Conv2d, bn: nn.BatchNorm2d, bits: int, scale: float, *, relu: bool) -> nn.Module:
    cls = nniq.ConvReLU2d if relu else nnq.Conv2d
    q = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    )
    q.set_weight_bias(*_folded(conv, bn, bits))
    q.scale, q.zero_point = float(scale), 0
    return q


def _observed(scale_zp: MinMaxObserver) -> tuple[float, int]:
    s, z = scale_zp.calculate_qparams()
    return float(s), int(z)


class _Int8Block(nn.Module):
    """One :class:`AnyPrecisionBlock` at ``bits`` on int8 kernels. Input: quint8 on its quant1 grid;
    output: quint8 on ``out_grid`` (the next block's quant1 grid, clamped), or on the calibrated
    ``out_qparams`` for the last block."""

    def __init__(
        self,
        block: AnyPrecisionBlock,
        bits: int,
        out_grid: tuple[float, float] | None,
        observers: dict[str, MinMaxObserver],
    ) -> None:
        super().__init__()
        self.bottleneck = block.bottleneck
        s2, self.clip2 = _grid(block.quant2, bits)
        self.conv1 = _qconv(block.conv1, block.bn1.bns[str(bits)], bits, s2, relu=True)
        if self.bottleneck:
            s3, self.clip3 = _grid(block.quant3, bits)
            self.conv2 = _qconv(block.conv2, block.bn2.bns[str(bits)], bits, s3, relu=True)
            last, last_bn = block.conv3, block.bn3
        else:
            last, last_bn = block.conv2, block.bn2
        s, zp = _observed(observers["residual"])
        self.conv_last = _qconv(last, last_bn.bns[str(bits)], bits, s, relu=False)
        self.conv_last.zero_point = zp
        self.downsample = None
        if block.downsample is not None:
            conv, bn = block.downsample
            ds, dz = _observed(observers["downsample"])
            self.downsample = _qconv(conv, bn.bns[str(bits)], bits, ds, relu=False)
            self.downsample.zero_point = dz
        self.add = nnq.QFunctional()
        if out_grid is not None:
            self.add.scale, self.out_clip = out_grid
        else:
            self.add.scale, _ = _observed(observers["output"])
            self.out_clip = None
        self.add.zero_point = 0

    def forward(self, xq: torch.Tensor) -> torch.Tensor:
        out = torch.clamp(self.conv1(xq), max=self.clip2)
        if self.bottleneck:
            out = torch.clamp(self.conv2(out), max=self.clip3)
        out = self.conv_last(out)
        identity = xq if self.downsample is None else self.downsample(xq)
        out = self.add.add_relu(out, identity)
        return out if self.out_clip is None else torch.clamp(out, max=self.out_clip)


class Int8Branch(nn.Module):
    """One bit width of an :class:`AnyPrecisionResNet` as an int8 network (see the module doc).

    Args:
        model: the trained any-precision network (not modified; its weights are copied).
        bits: the bit width, at most 8 and in the network's family.
        calibration: frames (N, 3, H, W) that set the scales of the tensors no PACT follows.
        engine: the quantised engine to build and run with (default: torch's current one).

    ``forward(frames)`` (N, 3, H, W) float -> pooled features (N, F) float, like
    ``model.frame_features(frames, bits)``.
    """

    def __init__(
        self,
        model: AnyPrecisionResNet,
        bits: int,
        calibration: torch.Tensor,
        *,
        engine: str | None = None,
    ) -> None:
        super().__init__()
        if bits not in model.family:
            raise ValueError(f"bit width {bits} is not in the network's family {model.family}")
        if bits > MAX_INT_BITS:
            raise ValueError(
                f"bit width {bits} has no integer path (PyTorch's quantised CPU kernels are int8; "
                f"bit widths above {MAX_INT_BITS} run on the float path)"
            )
        if any(q.mean_aligned for b in blocks_of(model) for q in b.modules() if isinstance(q, PACT)):
            raise ValueError("mean_aligned networks rescale by a data-dependent factor; no int8 path")
        self.bits, self.engine = bits, engine
        src = copy.deepcopy(model).eval()
        src.set_bit_width(bits)
        backbone = src.backbone
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        observers = self._calibrate(src, blocks_of(src), calibration)
        grids = [_grid(b.quant1, bits) for b in blocks_of(src)]
        self.in_scale, self.in_clip = grids[0]
        with quantized_engine(engine):
            self.blocks = nn.ModuleList(
                _Int8Block(b, bits, grids[i + 1] if i + 1 < len(grids) else None, observers[i])
                for i, b in enumerate(blocks_of(src))
            )

    @staticmethod
    @torch.no_grad()
    def _calibrate(
        src: AnyPrecisionResNet, blocks: list[AnyPrecisionBlock], frames: torch.Tensor
    ) -> list[dict[str, MinMaxObserver]]:
        observers = []
        hooks = []

        def watch(module: nn.Module, obs: MinMaxObserver) -> None:
            hooks.append(module.register_forward_hook(lambda _m, _i, out: obs(out)))

        for i, block in enumerate(blocks):
            obs = {k: MinMaxObserver(dtype=torch.quint8) for k in ("residual", "downsample", "output")}
            watch(block.bn3 if block.bottleneck else block.bn2, obs["residual"])
            if block.downsample is not None:
                watch(block.downsample, obs["downsample"])
            if i == len(blocks) - 1:  # the others end on the next block's PACT grid
                watch(block, obs["output"])
            observers.append(obs)
        try:
            src.frame_features(frames)
        finally:
            for h in hooks:
                h.remove()
        return observers

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.stem(frames).clamp(max=self.in_clip)
        with quantized_engine(self.engine):
            xq = torch.quantize_per_tensor(x, self.in_scale, 0, torch.quint8)
            for block in self.blocks:
                xq = block(xq)
        return _pool(xq.dequantize())


def blocks_of(model: AnyPrecisionResNet) -> list[AnyPrecisionBlock]:
    """The any-precision blocks of ``model``, in forward order."""
    return [m for m in model.backbone.modules() if isinstance(m, AnyPrecisionBlock)]
