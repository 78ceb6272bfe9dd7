"""The VideoIQ networks: any-precision ResNet, float teacher, and the model that combines them
with the precision policy (:mod:`videoiq.policy`).

::

    clip (B, T, 3, H, W)
      |-- bilinear 84x84 --> MobileNetV2 --> avg pool --> dropout --> LSTMCell(1280, 512) -- per frame t
      |                                                          --> Linear(512, #bits + #skips)
      |                                                          --> decision r_t (one-hot)
      '-- any-precision ResNet at the chosen bit width (skip: nothing) --> feature (F,) per kept frame
                                           mean over kept frames --> fc --> video logits (B, K)

The any-precision ResNet is the core's torchvision ResNet after layer surgery: every residual
block's convolutions become :class:`~videoiq.quant.QConv2d`, its BatchNorms switchable, and PACT
quantisers are placed on the block input (shared by the identity path), before conv2 and before
conv3. The stem (conv1, bn1) and the classifier stay full precision and are shared by all bit
widths. Note that its "32-bit" member is not the float network: weights are tanh-normalised and
activations PACT-clipped. The float network is the separate :class:`FullPrecisionTeacher`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from effvid.checkpoint import load_checked
from effvid.models import get_backbone, replace_modules
from videoiq.policy import PolicyOutput, PrecisionPolicy
from videoiq.quant import PACT, QConv2d, SwitchableBatchNorm2d, check_family, set_bit_width

__all__ = [
    "AnyPrecisionBlock",
    "AnyPrecisionResNet",
    "FullPrecisionTeacher",
    "VideoIQ",
    "VideoIQOutput",
]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def _pool(maps: torch.Tensor) -> torch.Tensor:
    # adaptive pooling as in the original (not .mean), so features match it to the last bit
    return F.adaptive_avg_pool2d(maps, 1).flatten(1)


class AnyPrecisionBlock(nn.Module):
    """A torchvision ``BasicBlock``/``Bottleneck`` made any-precision, keeping its parameter names.

    ::

        x --quant1--> x_q --conv1, bn1, relu --quant2--> conv2, bn2 [, relu --quant3--> conv3, bn3]
                       '--(downsample: QConv2d, switchable BN)-------------------------------> (+), relu
    """

    def __init__(
        self,
        block: BasicBlock | Bottleneck,
        family: Sequence[int],
        q_init: float | Sequence[float] = 2.0,
        *,
        mean_aligned: bool = False,
    ) -> None:
        super().__init__()
        family = check_family(family)
        self.bottleneck = isinstance(block, Bottleneck)
        n = 3 if self.bottleneck else 2
        for k in range(1, n + 1):
            setattr(self, f"quant{k}", PACT(family, q_init, mean_aligned=mean_aligned))
            setattr(
                self,
                f"conv{k}",
                QConv2d.from_conv(getattr(block, f"conv{k}"), family, mean_aligned=mean_aligned),
            )
            setattr(self, f"bn{k}", SwitchableBatchNorm2d.from_bn(getattr(block, f"bn{k}"), family))
        self.downsample: nn.Sequential | None = None
        if block.downsample is not None:
            conv, bn = block.downsample
            self.downsample = nn.Sequential(
                QConv2d.from_conv(conv, family, mean_aligned=mean_aligned),
                SwitchableBatchNorm2d.from_bn(bn, family),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W), non-negative -> (N, C_out, H', W')."""
        x = self.quant1(x)
        out = self.bn2(self.conv2(self.quant2(torch.relu(self.bn1(self.conv1(x))))))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.quant3(torch.relu(out))))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class InferenceMaxPool2d(nn.MaxPool2d):
    """The stem's max pool; without autograd it pools a channels-last copy and returns a contiguous
    tensor. The values are identical (a max does not depend on the layout), but PyTorch's CPU
    kernel for contiguous (NCHW) input is several times slower: 23 vs 8.5 ms for 128 frames of
    16x32x32, 75 vs 21 ms for 8 of 64x112x112, one thread, round trip included. With autograd it
    is the plain pool (the two kernels may route the gradient of tied maxima differently)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dim() != 4 or x.device.type != "cpu":
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


def _fast_stem_pool(backbone: nn.Module) -> None:
    pool = getattr(backbone, "maxpool", None)
    if type(pool) is nn.MaxPool2d:
        backbone.maxpool = InferenceMaxPool2d(
            pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode
        )


class _BitWidthMixin:
    family: tuple[int, ...]

    def set_bit_width(self, bits: int) -> None:
        """Run every quantised layer at ``bits`` (one of ``family``)."""
        if bits not in self.family:
            raise ValueError(f"bit width {bits} is not in the family {self.family}")
        set_bit_width(self, bits)  # type: ignore[arg-type]

    @contextmanager
    def bit_width(self, bits: int):
        """``with model.bit_width(4): ...`` (restores the largest bit width afterwards)."""
        self.set_bit_width(bits)
        try:
            yield self
        finally:
            self.set_bit_width(self.family[0])


class AnyPrecisionResNet(_BitWidthMixin, nn.Module):
    """The recognition network of VideoIQ's step 2 (``ResNet_PACT_AP``): one set of weights run
    at any bit width of ``bit_width_family``, a full-precision stem and classifier.

    Args:
        arch: a ResNet of the effvid registry (``resnet18`` / ``resnet50`` in the paper).
        num_classes: classifier outputs.
        bit_width_family: the bit widths, largest first (``(32, 4, 2)``).
        q_init: initial PACT clip, one value or one per bit width.
        dropout: before the classifier (0.5 in the original).
        mean_aligned: the original's ``--mean_aligned``: quantised weights and activations are
            rescaled to the mean of their unquantised values.
        backbone_kwargs: more arguments of the registry's builder (``{"width": 16}``: a narrow ResNet).
    """

    def __init__(
        self,
        *,
        arch: str = "resnet50",
        num_classes: int,
        bit_width_family: Sequence[int] = (32, 4, 2),
        q_init: float | Sequence[float] = 2.0,
        dropout: float = 0.5,
        mean_aligned: bool = False,
        backbone_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if arch not in RESNETS:
            raise ValueError(f"the any-precision network is a ResNet ({', '.join(RESNETS)}), got '{arch}'")
        self.family = check_family(bit_width_family)
        self.arch, self.backbone_kwargs = arch, dict(backbone_kwargs or {})
        self.backbone = get_backbone(arch, **self.backbone_kwargs)
        replace_modules(
            self.backbone,
            (BasicBlock, Bottleneck),
            lambda _name, block: AnyPrecisionBlock(block, self.family, q_init, mean_aligned=mean_aligned),
        )
        _fast_stem_pool(self.backbone)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    @classmethod
    def from_float(cls, teacher: FullPrecisionTeacher, **kwargs) -> AnyPrecisionResNet:
        """Start from a trained float network, as the original's step 2 does from step 1: convs,
        stem and classifier copied, every bit width's BN a copy of the float BN; the PACT clips
        keep ``q_init``. ``kwargs`` are the other constructor arguments (``num_classes``, ``arch``
        and ``backbone_kwargs`` come from the teacher)."""
        model = cls(
            arch=teacher.arch,
            num_classes=teacher.fc.out_features,
            backbone_kwargs=teacher.backbone_kwargs,
            **kwargs,
        )
        float_state = teacher.state_dict()
        state = {}
        for key in model.state_dict():
            if ".clips." in key:
                continue
            state[key] = float_state[re.sub(r"\.bns\.\d+\.", ".", key)]
        load_checked(model, state, allow_missing=("*.clips.*",), source="float network")
        return model

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def frame_features(self, frames: torch.Tensor, bits: int | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> pooled features (N, F), at ``bits`` if given (else the active width)."""
        if bits is not None:
            self.set_bit_width(bits)
        return _pool(self.backbone.forward_feature_maps(frames))

    def forward(self, clip: torch.Tensor, bits: int | None = None) -> torch.Tensor:
        """Static forward at one bit width: clip (B, T, 3, H, W) -> logits (B, K), averaged over T."""
        b, t = clip.shape[:2]
        logits = self.fc(self.dropout(self.frame_features(clip.flatten(0, 1), bits)))
        return logits.view(b, t, -1).mean(dim=1)


class FullPrecisionTeacher(nn.Module):
    """The float ResNet + classifier that the original kept inside the student as ``*_32fp``:
    clip (B, T, 3, H, W) -> logits (B, K) averaged over T (no dropout, as in ``resnet_videoiq``)."""

    def __init__(
        self, *, arch: str = "resnet50", num_classes: int, backbone_kwargs: dict | None = None
    ) -> None:
        super().__init__()
        self.arch, self.backbone_kwargs = arch, dict(backbone_kwargs or {})
        self.backbone = get_backbone(arch, **self.backbone_kwargs)
        _fast_stem_pool(self.backbone)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        logits = self.fc(_pool(self.backbone.forward_feature_maps(clip.flatten(0, 1))))
        return logits.view(b, t, -1).mean(dim=1)


@dataclass
class VideoIQOutput:
    logits: torch.Tensor  # (B, K) video logits from the kept frames at their chosen precision
    policy: PolicyOutput
    features: torch.Tensor  # (B, T, P, F) every frame at every precision choice


class VideoIQ(nn.Module):
    """Policy + any-precision ResNet (``ResNetVideoIQ`` of the original, without its teacher).

    The policy's actions are ``[precisions..., skips...]``; the precisions are the bit widths of
    the family, preceded by ``"float"`` with ``float_branch=True`` (the original's
    ``--use_fp_as_bb``: a frozen float trunk - the original's ``*_32fp`` copy - as one more
    choice, whose features go through the shared classifier).

    :meth:`forward` is the training forward of the original: every frame runs at every precision,
    and the decisions select the features (so that the policy gets gradients through the
    straight-through one-hot). :mod:`videoiq.inference` runs only what was chosen.

    Args:
        arch, num_classes, bit_width_family, q_init, dropout, mean_aligned: see :class:`AnyPrecisionResNet`.
        skip_list: the policy's skip options.
        policy_head: add the policy's classification head (``--is_policy_pred``).
        float_branch: add the float trunk as the first precision choice.
        backbone_kwargs: more arguments of the ResNet builder (``{"width": 16}``).
        policy_kwargs: more :class:`PrecisionPolicy` arguments (``input_size``, ``hidden``...).
    """

    def __init__(
        self,
        *,
        arch: str = "resnet50",
        num_classes: int,
        bit_width_family: Sequence[int] = (32, 4, 2),
        skip_list: Sequence[int] = (1,),
        q_init: float | Sequence[float] = 2.0,
        dropout: float = 0.5,
        mean_aligned: bool = False,
        policy_head: bool = False,
        float_branch: bool = False,
        backbone_kwargs: dict | None = None,
        policy_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.recognizer = AnyPrecisionResNet(
            arch=arch,
            num_classes=num_classes,
            bit_width_family=bit_width_family,
            q_init=q_init,
            dropout=dropout,
            mean_aligned=mean_aligned,
            backbone_kwargs=backbone_kwargs,
        )
        self.float_branch = (
            get_backbone(arch, **self.recognizer.backbone_kwargs).requires_grad_(False)
            if float_branch
            else None
        )
        if self.float_branch is not None:
            _fast_stem_pool(self.float_branch)
        self.policy = PrecisionPolicy(
            num_bits=len(self.precisions),
            skip_list=skip_list,
            num_classes=num_classes if policy_head else None,
            **(policy_kwargs or {}),
        )

    @property
    def family(self) -> tuple[int, ...]:
        return self.recognizer.family

    @property
    def skip_list(self) -> tuple[int, ...]:
        return self.policy.skip_list

    @property
    def precisions(self) -> tuple[int | str, ...]:
        """The precision choices in action order: ``("float",)`` if any, then the bit widths."""
        return (("float",) if self.float_branch is not None else ()) + self.family

    @property
    def precision_bits(self) -> tuple[int, ...]:
        """Bits of each precision choice (the float branch counts as 32)."""
        return tuple(32 if p == "float" else int(p) for p in self.precisions)

    def precision_features(self, frames: torch.Tensor, precision: int | str) -> torch.Tensor:
        """(N, 3, H, W) -> pooled features (N, F) at one precision choice (a bit width or "float")."""
        if precision == "float":
            assert self.float_branch is not None
            with torch.no_grad():  # frozen, as the original's teacher copy
                return _pool(self.float_branch.forward_feature_maps(frames))
        return self.recognizer.frame_features(frames, int(precision))

    def combine(self, features: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        """The original's ``combine_logits`` + head: features (B, T, P, F) of each frame at each
        precision, decisions (B, T, A) -> logits (B, K) = fc of the mean feature over the kept
        frames (per-frame dropout in training; a video that skipped every frame gets fc's bias)."""
        b, t, p = features.shape[:3]
        chosen = decisions[:, :, :p]
        feat = (features * chosen.unsqueeze(-1)).sum(dim=2)
        kept_share = chosen.sum(dim=(1, 2)).clamp(min=1) / float(t)
        feat = feat / kept_share[:, None, None]
        logits = self.recognizer.fc(self.recognizer.dropout(feat.flatten(0, 1)))
        return logits.view(b, t, -1).mean(dim=1)

    def forward(self, clip: torch.Tensor, *, sample: bool | None = None) -> VideoIQOutput:
        """clip (B, T, 3, H, W) -> :class:`VideoIQOutput` (every precision runs on every frame)."""
        policy = self.policy(clip, sample=sample)
        frames = clip.flatten(0, 1)
        try:
            feats = [self.precision_features(frames, p).view(*clip.shape[:2], -1) for p in self.precisions]
        finally:
            self.recognizer.set_bit_width(self.family[0])
        features = torch.stack(feats, dim=2)
        return VideoIQOutput(self.combine(features, policy.decisions), policy, features)
