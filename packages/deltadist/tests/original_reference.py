"""Re-creations of parts of the ORIGINAL Delta Distillation code, for tests only.

Written from the documented facts of Qualcomm-AI-research/delta-distillation (module structure,
key names, shapes, control flow; see shared/research/deltadist.md), not from its source:

* :class:`OriginalDeltaConv` - ``lib/models/delta_distillation/conv.py::Conv``: submodules ``W``
  (teacher), ``g_Wa`` (full student), ``g_Wb`` (``Sequential`` of a ``kh x 1`` bias-free and a
  ``1 x kw`` conv), ``g_gate`` (scalar ``bias`` logit), ``g_W`` chosen at the first ``.eval()``
  (``g_Wa`` if the logit > 0), clips rolled into the batch with ``T`` frames each, the student's
  output added to the keyframe's teacher output *including the student's own bias*;
* :func:`original_spatial_svd` / :func:`original_init_from_frame_based` - ``convertor.py``'s SVD
  (numpy; kernel ``(n, c, h, w)`` -> ``(c, h, n, w)`` -> matrix ``(c*h, n*w)``, factors
  ``V sqrt(S)`` -> ``(r, c, h, 1)`` and ``sqrt(S) H`` -> ``(n, r, 1, w)``) and its conversion of a
  frame-based state dict (``W`` and ``g_Wa`` = the weights, ``g_Wb`` from the SVD, the bias to
  ``g_Wa`` and ``g_Wb.1``);
* :func:`convert_original` - the original's ``convert_convs`` rule (``Conv2d`` in module order,
  all but the first and the last);
* :func:`ptflops_convention_macs` - the MAC convention of ptflops 0.6.2 as the original calls it
  (conv with bias, ReLU = output elements, pooling = input elements, BatchNorm ignored, functional
  ops not counted, the whole rolled clip counted as one input).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class OriginalGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(1.0))


class OriginalDeltaConv(nn.Module):
    def __init__(self, conv: nn.Conv2d, factor_ch: int = 4, gate_bias_init: float = -1.0) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        ph, pw = conv.padding
        dh, dw = conv.dilation
        cin, cout, bias = conv.in_channels, conv.out_channels, conv.bias is not None
        rank = cout // factor_ch if cout > factor_ch else cout  # the "out" rule
        geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        self.W = nn.Conv2d(cin, cout, conv.kernel_size, bias=bias, **geometry)
        self.g_W = None
        self.g_Wa = nn.Conv2d(cin, cout, conv.kernel_size, bias=bias, **geometry)
        self.g_Wb = nn.Sequential(
            nn.Conv2d(cin, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=conv.groups, bias=False),
            nn.Conv2d(rank, cout, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias),
        )
        self.g_gate = OriginalGate()
        with torch.no_grad():
            self.g_gate.bias.fill_(gate_bias_init)
        self.T = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training, "only the inference path is re-created"
        if self.T == 1:
            return self.W(x)
        clips = x.view((-1, self.T) + x.shape[1:])
        x0 = clips[:, 0]
        dx = (clips[:, 1:] - x0.unsqueeze(1)).reshape((-1,) + x.shape[1:])
        z0 = self.W(x0)
        dz = self.g_W(dx)
        z = torch.cat((z0.unsqueeze(1), z0.unsqueeze(1) + dz.view((-1, self.T - 1) + dz.shape[1:])), 1)
        return z.view((-1,) + z.shape[2:])

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode and self.g_W is None:  # chosen once, at the first .eval(), and aliased
            self.g_W = self.g_Wa if self.g_gate.bias > 0 else self.g_Wb
        return self


def convert_original(model: nn.Module, **kwargs) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][1:-1]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, OriginalDeltaConv(getattr(parent, child), **kwargs))
    return names


def set_original_T(model: nn.Module, T: int) -> None:
    for m in model.modules():
        if isinstance(m, OriginalDeltaConv):
            m.T = T


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, so that nothing is an identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 0:  # gate logits: either sign
                t.copy_(torch.randn((), generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / max(t[0].numel(), 1)) ** 0.5)
    return model


def ptflops_convention_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of ``model(x)`` counted as the original's ptflops 0.6.2 call counts them (see module doc)."""
    total = 0

    def conv(m, _inp, out):
        nonlocal total
        positions = out.shape[0] * math.prod(out.shape[2:])
        total += math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * positions
        total += m.out_channels * positions if m.bias is not None else 0

    def relu(_m, _inp, out):
        nonlocal total
        total += out.numel()

    def pool(_m, inp, _out):
        nonlocal total
        total += inp[0].numel()

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.ReLU):
            hooks.append(m.register_forward_hook(relu))
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)):
            hooks.append(m.register_forward_hook(pool))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def original_spatial_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().numpy()
    n, c, h, kw = w.shape
    matrix = np.transpose(w, [1, 2, 0, 3]).reshape(c * h, n * kw)
    assert rank <= c * h
    v, s, hh = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    v = v[:, :rank] * root
    hh = root.reshape(rank, 1) * hh[:rank]
    vertical = np.transpose(v.reshape(c, 1, h, rank), [3, 0, 2, 1])
    horizontal = np.transpose(hh.reshape(rank, n, kw, 1), [1, 0, 3, 2])
    return torch.tensor(vertical, dtype=torch.float32), torch.tensor(horizontal, dtype=torch.float32)


def original_init_from_frame_based(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The original's ``init_weights_train(convert=True)`` for a converted ``model``, minus its silence."""
    target = model.state_dict()
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        wrapped = ".".join(parts[:-1] + ["W", parts[-1]])
        if wrapped not in target:
            out[key] = value
            continue
        out[wrapped] = value
        out[wrapped.replace(".W.", ".g_Wa.")] = value
        if parts[-1] == "weight":
            rank = target[wrapped.replace(".W.", ".g_Wb.0.")].shape[0]
            vertical, horizontal = original_spatial_svd(value, rank)
            out[wrapped.replace(".W.", ".g_Wb.0.")] = vertical
            out[wrapped.replace(".W.", ".g_Wb.1.")] = horizontal
        else:
            out[wrapped.replace(".W.", ".g_Wb.1.")] = value
    model.load_state_dict(out, strict=False)
