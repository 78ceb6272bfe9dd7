"""Faster inference copies of a network, built from torch's own passes.

:func:`optimize_for_inference` takes a module that maps a batch of frames to something (a
backbone, a frame-feature network) and returns an inference-only copy of it:

* ``fold_bn``: every BatchNorm that follows a convolution is folded into it
  (``torch.fx.experimental.optimization.fuse``); the same function up to float rounding;
* ``channels_last``: weights and inputs in channels-last memory format, which oneDNN's CPU
  convolutions and cuDNN's tensor-core kernels prefer; the same function up to float rounding;
* ``int8`` (CPU): post-training static quantisation of convolutions and linears by ``torch.ao``
  (x86 backend, per-channel weights, activation ranges observed on calibration batches). It
  changes the outputs: report its accuracy next to its speed;
* ``compile``: ``torch.compile`` with weight freezing; the first call at each new input shape
  compiles (tens of seconds for a ResNet-50 on a CPU), so it pays off on long runs only.

``dtype`` (``torch.bfloat16``, ``torch.float16``): the copy's weights are stored in that type and
its input cast to it, which is what ``torch.autocast`` computes for convolutions and linears but
without casting every weight again at every call (10 % faster for a ResNet-50 frame on a CPU).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from effvid.config import option

__all__ = ["CastInput", "ChannelsLast", "FastInferenceConfig", "optimize_for_inference"]


@dataclass
class FastInferenceConfig:
    fold_bn: bool = option(
        True, "fold BatchNorm into the convolution before it (same outputs up to rounding)"
    )
    channels_last: bool = option(
        True, "convolutions in channels-last memory format (same outputs up to rounding)"
    )
    int8: bool = option(
        False, "CPU: int8 post-training quantisation (torch.ao, x86); changes outputs, see benchmarks/"
    )
    calibration_batches: int = option(4, "int8: batches whose activation ranges set the quantisation")
    compile: bool = option(False, "torch.compile with frozen weights (slow first call per input shape)")

    def __post_init__(self) -> None:
        if self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {self.calibration_batches}")


class ChannelsLast(nn.Module):
    """``module`` with its input made channels-last first (4-D inputs only)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


class CastInput(nn.Module):
    """``module`` with its weights in ``dtype`` and its input cast to ``dtype`` first."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype))


def _quantize_int8(
    module: nn.Module, calibration: Iterable[torch.Tensor], outputs: list[torch.Tensor] | None
) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = list(calibration)
    if not batches:
        raise ValueError("int8 quantisation needs at least one calibration batch; the data gave none")
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():  # torch.ao's FX quantisation warns that it is in maintenance
        warnings.simplefilter("ignore")
        prepared = prepare_fx(module, get_default_qconfig_mapping("x86"), example_inputs=(batches[0],))
        with torch.no_grad():
            for batch in batches:
                out = prepared(batch)  # observers record ranges; the values are the float network's
                if outputs is not None:
                    outputs.append(out)
        return convert_fx(prepared)


def optimize_for_inference(
    module: nn.Module,
    cfg: FastInferenceConfig,
    *,
    device: torch.device,
    calibration: Iterable[torch.Tensor] | None = None,
    calibration_outputs: list[torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """An inference-only copy of ``module`` on ``device`` with the passes ``cfg`` asks for.

    ``module`` must be traceable by ``torch.fx`` for ``fold_bn`` and ``int8`` (torchvision's
    ResNets, MobileNets and EfficientNets are). ``calibration`` (int8 only): input batches on the
    CPU; the float outputs of those batches (BatchNorm folded) are appended to
    ``calibration_outputs`` when given, at no extra cost. ``dtype``: weights and input in this
    floating type (outputs too). The original module is left untouched.
    """
    out = copy.deepcopy(module).eval().to(device)
    for p in out.parameters():
        p.requires_grad_(False)
    if dtype is not None and (cfg.int8 or not dtype.is_floating_point):
        raise ValueError(f"dtype={dtype} is for float inference copies; int8 is its own pass (fast.int8)")
    if cfg.int8:
        if device.type != "cpu":
            raise ValueError(
                f"int8 inference runs on the CPU only (torch.ao's x86 backend); device is {device}"
            )
        if calibration is None:
            raise ValueError("int8 inference needs calibration batches")
        return _quantize_int8(out, calibration, calibration_outputs)  # folds BatchNorm itself
    if cfg.fold_bn:
        from torch.fx.experimental.optimization import fuse

        out = fuse(out)
    if dtype is not None:
        out = CastInput(out, dtype)
    if cfg.channels_last:
        out = ChannelsLast(out)
    if cfg.compile:
        out = torch.compile(out, options={"freezing": True})  # type: ignore[assignment]
    return out
