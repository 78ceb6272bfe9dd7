"""The delta layer, conversion of a model to delta layers, and running clips through it.

A converted model still takes frames rolled into the batch axis, ``(N*T, C, H, W)`` clip-major
(frames ``0..T-1`` of clip 0, then clip 1, ...); frame 0 of every clip is the keyframe. Only the
delta layers look at the time axis: each one computes ::

    z_0 = teacher(x_0)                          keyframe, batch N
    z_t = z_0 + student(x_t - x_0)   t >= 1     one batched student pass, batch N*(T-1)

so deltas are relative to the keyframe (not to the previous frame), and everything between delta
layers (BatchNorm, ReLU, pooling, upsampling, residual adds) runs on the reconstructed features
of every frame. The student is the full-size copy or the low-rank separable one, picked by the
layer's :class:`~deltadist.students.Gate` (1 = full-size).

    >>> names = convert_to_delta(net)            # all Conv2d but the first and the last
    >>> out = forward_clip(net, clips)           # (B, T, 3, H, W) -> (B, T, ...)
    >>> stream = DeltaStream(net, keyframe_interval=3)
    >>> outs = [stream(frame) for frame in frames]   # (B, 3, H, W) each, one frame at a time
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from deltadist.students import Gate, Reduction, SeparableConv, student_rank
from effvid.models import replace_modules, revert_modules, select_modules

__all__ = [
    "BiasMode",
    "DeltaConv",
    "DeltaStream",
    "convert_to_delta",
    "delta_layers",
    "deploy",
    "copy_teacher_model",
    "forward_clip",
    "revert_to_teacher",
    "set_clip_length",
    "student_parameters",
]

BiasMode = Literal["corrected", "original"]
Student = Literal["full", "lowrank"]


class DeltaConv(nn.Module):
    """A teacher ``nn.Conv2d`` with two students on feature deltas and a gate between them.

    Submodules: ``teacher`` (the original convolution, still trained), ``student_full`` (same
    shape, initialised as a copy of the teacher), ``student_lowrank`` (:class:`SeparableConv`,
    initialised by truncated spatial SVD of the teacher kernel), ``gate``. After :meth:`deploy`
    only ``teacher`` and ``student`` (the chosen one) remain.

    Bias: with ``bias_mode="corrected"`` (default) the students have no bias, because a delta of
    a biased linear map carries none: ``z_t = (W x_0 + b) + W'(x_t - x_0)``, which is exactly the
    teacher's output when ``W' == W``. ``bias_mode="original"`` reproduces the original, whose
    students carry a bias initialised to the teacher's: delta frames then get ``b`` twice (needed
    to load and reproduce its checkpoints).

    Args:
        conv: the teacher (kept, not copied). ``groups`` must be 1 and padding numeric zeros.
        factor_ch / reduction: the low-rank student's rank rule (:func:`student_rank`).
        gate_init: the gate's initial logit (the original's default -1: P(full) = 0.27).

    Attributes set by the caller: ``clip_length`` (T; 1 = every frame through the teacher),
    ``force`` (``"full"``/``"lowrank"`` overrides the gate), ``record_targets`` (run the teacher on
    every frame and keep its deltas in ``teacher_delta``, the distillation target). In training,
    ``student_delta`` ``(N*(T-1), Cout, H', W')`` and ``gate_value`` (0-dim) keep the last forward's.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        *,
        factor_ch: int = 4,
        reduction: Reduction = "out",
        gate_init: float = -1.0,
        bias_mode: BiasMode = "corrected",
    ) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"DeltaConv wraps a plain nn.Conv2d, got {type(conv).__name__}")
        if bias_mode not in ("corrected", "original"):
            raise ValueError(f"bias_mode must be 'corrected' or 'original', got {bias_mode!r}")
        self.bias_mode: BiasMode = bias_mode
        student_bias = bias_mode == "original" and conv.bias is not None
        rank = student_rank(conv.in_channels, conv.out_channels, factor_ch, reduction)
        self.teacher = conv
        self.student_full = _conv_like(conv, bias=student_bias)
        self.student_lowrank = SeparableConv(conv, rank, bias=student_bias)
        self.gate = Gate(gate_init).to(conv.weight.device)
        self.student: nn.Module | None = None
        self.init_students()
        self.clip_length = 1
        self.force: Student | None = None
        self.record_targets = False
        self.student_delta: torch.Tensor | None = None
        self.gate_value: torch.Tensor | None = None
        self.teacher_delta: torch.Tensor | None = None
        self._stream_on = False
        self._stream_key = False
        self._key_input: torch.Tensor | None = None
        self._key_output: torch.Tensor | None = None
        self.train(conv.training)  # a layer swapped into an eval-mode model must not sample its gate

    @property
    def deployed(self) -> bool:
        return self.student is not None

    @torch.no_grad()
    def init_students(self) -> None:
        """Full student = the teacher's weights; low-rank = truncated SVD of them (biases: see class)."""
        if self.teacher.weight.is_meta:
            return  # nothing to compute on the meta device (MAC counting builds models there)
        self.student_full.weight.copy_(self.teacher.weight)
        if self.student_full.bias is not None:
            self.student_full.bias.copy_(self.teacher.bias)
        self.student_lowrank.init_from(self.teacher)

    def choice(self) -> Student:
        """The student used outside training: the deployed one; else ``force`` if set, else the
        gate's (logit > 0: full)."""
        if self.deployed:
            return self._deployed_choice
        if self.force is not None:
            return self.force
        return "full" if bool(self.gate.logit > 0) else "lowrank"

    def _student_delta(self, dx: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.student(dx)
        if self.force is not None and self.force not in ("full", "lowrank"):
            raise ValueError(f"force must be None, 'full' or 'lowrank', got {self.force!r}")
        if not self.training:
            return (self.student_full if self.choice() == "full" else self.student_lowrank)(dx)
        if self.force is not None:
            g = torch.tensor(1.0 if self.force == "full" else 0.0, device=dx.device, dtype=dx.dtype)
            dz = (self.student_full if self.force == "full" else self.student_lowrank)(dx)
        else:
            g = self.gate()
            dz = g * self.student_full(dx) + (1 - g) * self.student_lowrank(dx)
        self.student_delta, self.gate_value = dz, g
        return dz

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N*T, Cin, H, W), T = ``clip_length``, frame 0 of each clip the keyframe -> (N*T, Cout, H', W').

        While a :class:`DeltaStream` drives the model: (N, Cin, H, W), one frame of each of N streams.
        """
        if self._stream_on:
            return self._forward_stream(x)
        t = self.clip_length
        if t == 1:
            self.student_delta = self.gate_value = None  # no delta frame: nothing sampled this time
            return self.teacher(x)
        if x.shape[0] % t:
            raise ValueError(f"a batch of {x.shape[0]} frames is not a whole number of {t}-frame clips")
        if self.record_targets:
            z = self.teacher(x).unflatten(0, (-1, t))
            self.teacher_delta = (z[:, 1:] - z[:, :1]).flatten(0, 1).detach()
            return z.flatten(0, 1)
        if x.shape[0] == t and self._in_place_ok():
            return self._forward_one_clip(x)
        clips = x.unflatten(0, (-1, t))
        x0 = clips[:, 0]
        z0 = self.teacher(x0).unsqueeze(1)
        dz = self._student_delta((clips[:, 1:] - x0.unsqueeze(1)).flatten(0, 1)).unflatten(0, (-1, t - 1))
        if not self._in_place_ok() or dz.dtype != z0.dtype:
            return torch.cat([z0, z0 + dz], 1).flatten(0, 1)
        # inference: the delta frames' sum is written straight into the output (no torch.cat copy of
        # them), and the output keeps the keyframe's memory format (a 5-D cat returns NCHW even
        # for channels-last inputs, which costs every later convolution a conversion)
        z0 = z0[:, 0]
        fmt = torch.channels_last if _channels_last(z0) else torch.contiguous_format
        out = torch.empty((x.shape[0], *z0.shape[1:]), dtype=z0.dtype, device=z0.device, memory_format=fmt)
        frames = out.unflatten(0, (-1, t))
        frames[:, 0] = z0
        torch.add(dz, z0.unsqueeze(1), out=frames[:, 1:])
        return out

    def _forward_one_clip(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on a single clip (batch = its T frames): the general path's arithmetic on plain
        4-D slices, without its 5-D views (each view is a dispatched op, and on DDRNet's small maps
        at 128x256 those fixed costs are a measurable part of a delta layer's time)."""
        x0 = x[:1]
        z0 = self.teacher(x0)
        dz = self._student_delta(x[1:] - x0)
        if dz.dtype != z0.dtype:
            return torch.cat([z0, z0 + dz])
        fmt = torch.channels_last if _channels_last(z0) else torch.contiguous_format
        out = torch.empty((x.shape[0], *z0.shape[1:]), dtype=z0.dtype, device=z0.device, memory_format=fmt)
        out[:1] = z0
        torch.add(dz, z0, out=out[1:])
        return out

    def _in_place_ok(self) -> bool:
        # training keeps dz (student_delta) for the distillation loss, and autograd needs it intact
        return not (self.training or torch.is_grad_enabled())

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        if self._stream_key or self._key_input is None:
            z = self.teacher(x)
            # copies: the caller may modify either tensor in place before the next frame
            self._key_input, self._key_output = x.detach().clone(), z.detach().clone()
            return z
        if x.shape != self._key_input.shape:
            raise ValueError(
                f"streamed input {tuple(x.shape)} differs from its keyframe's {tuple(self._key_input.shape)}"
            )
        dz = self._student_delta(x - self._key_input)
        if self._in_place_ok() and dz.dtype == self._key_output.dtype:
            return dz.add_(self._key_output)
        return self._key_output + dz

    def reset_stream(self) -> None:
        """Forget the kept keyframe; the next streamed frame is a keyframe."""
        self._key_input = self._key_output = None

    @torch.no_grad()
    def deploy(self) -> Student:
        """Keep only the student :meth:`choice` picks (as ``student``); drop the other and the gate."""
        if self.deployed:
            return self._deployed_choice
        chosen = self.choice()
        self.student = self.student_full if chosen == "full" else self.student_lowrank
        self._deployed_choice: Student = chosen
        del self.student_full, self.student_lowrank, self.gate
        self.force = None
        return chosen

    def revert(self) -> nn.Conv2d:
        """The teacher convolution, to put back in place of this layer (``revert_modules``)."""
        return self.teacher

    def extra_repr(self) -> str:
        extra = f", deployed={self._deployed_choice}" if self.deployed else ""
        return f"bias_mode={self.bias_mode}{extra}"


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _conv_like(conv: nn.Conv2d, *, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def convert_to_delta(
    model: nn.Module,
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    skip_first: int = 1,
    skip_last: int = 1,
    factor_ch: int = 4,
    reduction: Reduction = "out",
    gate_init: float = -1.0,
    bias_mode: BiasMode = "corrected",
) -> list[str]:
    """Replace the chosen ``nn.Conv2d`` of ``model`` (in place) by :class:`DeltaConv` layers.

    The rule is the original's for segmentation by default: every ``nn.Conv2d`` in module
    (registration) order except the first (the RGB stem) and the last (the classifier). ``include``
    / ``exclude`` are glob patterns on module names applied before the skips (the original's
    detection rule is ``skip_last=2``). Returns the converted names, in module order.

    Raises:
        ValueError: the rule selects no convolution (the message says how many the model has).
    """
    existing = delta_layers(model)
    if existing:
        raise ValueError(
            f"{type(model).__name__} already has {len(existing)} delta layers (e.g. '{next(iter(existing))}'); "
            "revert_to_teacher(model) first: their teachers and students are Conv2d too"
        )
    names = select_modules(
        model, nn.Conv2d, include=include, exclude=exclude, skip_first=skip_first, skip_last=skip_last
    )
    if not names:
        total = len(select_modules(model, nn.Conv2d))
        raise ValueError(
            f"the conversion rule (include={list(include)}, exclude={list(exclude)}, skip_first={skip_first}, "
            f"skip_last={skip_last}) selects no Conv2d of {type(model).__name__}, which has {total}"
        )

    def make(name: str, conv: nn.Module) -> DeltaConv:
        try:
            return DeltaConv(
                conv, factor_ch=factor_ch, reduction=reduction, gate_init=gate_init, bias_mode=bias_mode
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cannot convert '{name}': {exc}; leave it out with exclude=['{name}']") from exc

    return replace_modules(model, names, make)


def revert_to_teacher(model: nn.Module) -> list[str]:
    """Put every delta layer's teacher convolution back; returns the reverted names."""
    return revert_modules(model, lambda _name, module: isinstance(module, DeltaConv))


def delta_layers(model: nn.Module) -> dict[str, DeltaConv]:
    """The model's delta layers by name, in module order (the order of gates and cost vectors)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DeltaConv)}


def student_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The students' and gates' parameters (the original trains them at 10x the teachers' rate;
    everything else, teachers included, is the other group)."""
    params = []
    for layer in delta_layers(model).values():
        for name, p in layer.named_parameters():
            if not name.startswith("teacher."):
                params.append(p)
    return params


def set_clip_length(model: nn.Module, clip_length: int) -> None:
    """Tell every delta layer that batches hold ``clip_length`` frames per clip (1 = no deltas)."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    layers = delta_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no delta layers; convert it first")
    for layer in layers.values():
        layer.clip_length = clip_length


def deploy(model: nn.Module) -> dict[str, Student]:
    """Deploy every delta layer (see :meth:`DeltaConv.deploy`); returns each layer's student."""
    return {name: layer.deploy() for name, layer in delta_layers(model).items()}


def forward_clip(model: nn.Module, clips: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Run ``(B, T, C, H, W)`` clips (frame 0 the keyframe) -> the model's output as ``(B, T, ...)``
    (each of them, for a model that returns a tuple of per-frame tensors)."""
    if clips.dim() != 5:
        raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(clips.shape)}")
    b, t = clips.shape[:2]
    layers = delta_layers(model)
    before = {name: layer.clip_length for name, layer in layers.items()}
    set_clip_length(model, t)
    try:
        out = model(clips.flatten(0, 1))
    finally:
        for name, layer in layers.items():
            layer.clip_length = before[name]
    if isinstance(out, tuple):
        return tuple(o.unflatten(0, (b, t)) for o in out)
    return out.unflatten(0, (b, t))


class DeltaStream:
    """Run a converted model one frame at a time, with a keyframe every ``keyframe_interval`` frames.

    Each delta layer keeps its keyframe input and output; a later frame costs only the students.
    ``stream(frames)`` takes ``(N, C, H, W)``, the next frame of each of N streams, and returns the
    model's output for it. Outputs equal :func:`forward_clip` on the same frames cut into clips of
    ``keyframe_interval``. Call :meth:`reset` between videos.
    """

    def __init__(self, model: nn.Module, keyframe_interval: int) -> None:
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self.model, self.keyframe_interval = model, keyframe_interval
        self.layers = list(delta_layers(model).values())
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no delta layers; convert it first")
        self.index = 0
        self.reset()

    def reset(self) -> None:
        self.index = 0
        for layer in self.layers:
            layer.reset_stream()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        key = self.index % self.keyframe_interval == 0
        for layer in self.layers:
            layer._stream_on, layer._stream_key = True, key
        try:
            out = self.model(frames)
        finally:
            for layer in self.layers:
                layer._stream_on = False
        self.index += 1
        return out


def copy_teacher_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every delta layer reverted to its teacher (a frame-based net)."""
    twin = copy.deepcopy(model)
    revert_to_teacher(twin)
    return twin
