"""Per-video compute of VideoIQ, three ways.

(a) :func:`paper_gflops` - the original's analytic formula, so that published numbers compare. A
    frame at ``b`` bits costs ``min(b, 8)^2 / 64`` of the float backbone (a 32-bit frame is charged
    like an 8-bit one), a skipped frame 0; the first and last layers (1.92 G) and the policy
    (0.779 min(p, 8)^2/64 + 0.119 = 0.898 G) are charged for every video. The constants are the
    original's for 16 frames at 224x224 (its "GFLOPs" are GMACs): R-18 29.10 G, R-50 65.76 G.
    For another network or input, :func:`measured_paper_constants` measures the same three
    constants (float backbone, first + last layers, policy; per video) and the formula is applied
    to them.
(b) :func:`video_macs` - MACs of what :func:`~videoiq.inference.dynamic_inference` executed,
    from unit costs measured with effvid's FlopCounterMode engine (:func:`measure_unit_costs`):
    one backbone pass per kept frame at its bit width, the classifier once, the policy on every
    frame. Quantisation does not change a MAC count; bit widths enter only through (c).
(c) :func:`frame_bitops` / :func:`video_bitops` - BitOPs (MACs x weight bits x activation bits,
    :func:`effvid.flops.bitops_table`): a quantised layer at ``b`` bits costs ``b * b`` per MAC, the
    float stem, classifier and policy 32 x 32.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from effvid.flops import FLOAT_BITS, UnitCosts, bitops_table, mac_table, per_sample_macs
from videoiq.model import AnyPrecisionResNet, VideoIQ
from videoiq.quant import QConv2d

__all__ = [
    "PAPER_BACKBONE_GFLOPS",
    "PaperConstants",
    "frame_bitops",
    "measure_unit_costs",
    "measured_paper_constants",
    "paper_constants",
    "paper_gflops",
    "static_costs",
    "video_bitops",
    "video_macs",
]

PAPER_BACKBONE_GFLOPS = {"resnet18": 29.10, "resnet50": 65.76}
"""The original's float backbone GFLOPs (GMACs) per 16-frame 224x224 video (``validate_ada``)."""
PAPER_FIRST_LAST_GFLOPS = 1.92  # stem + classifier of 16 frames, charged even for skipped ones
PAPER_POLICY_GFLOPS = (0.779, 0.119)  # quantisable part x min(p_bit, 8)^2 / 64 + float part


def paper_relative_cost(bits: int) -> float:
    """The original's per-frame cost relative to the float backbone: ``min(b, 8)^2 / 64``."""
    return min(bits, 8) ** 2 / 64


@dataclass(frozen=True)
class PaperConstants:
    """The three constants of the original's formula, GMACs per video."""

    backbone: float  # the float backbone and classifier on every frame
    first_last: float  # of that, the float first and last layers (charged even for skipped frames)
    policy: float  # the policy network on every frame
    source: str = "paper"  # "paper": the original's (16 frames at 224x224); "measured": this model's

    def backbone_gflops(self, relative_cost: torch.Tensor | float) -> torch.Tensor | float:
        """Backbone GMACs of a video whose frames cost ``relative_cost`` of a float frame on average."""
        return relative_cost * (self.backbone - self.first_last) + self.first_last


def paper_constants(arch: str, *, policy_bits: int = 32) -> PaperConstants:
    """The original's constants for ``arch`` (R-18 / R-50, 16 frames at 224x224)."""
    if arch not in PAPER_BACKBONE_GFLOPS:
        raise ValueError(
            f"the original's formula has constants for {sorted(PAPER_BACKBONE_GFLOPS)}, not '{arch}'"
        )
    quantisable, fixed = PAPER_POLICY_GFLOPS
    policy = quantisable * paper_relative_cost(policy_bits) + fixed
    return PaperConstants(PAPER_BACKBONE_GFLOPS[arch], PAPER_FIRST_LAST_GFLOPS, policy)


def measured_paper_constants(
    model: VideoIQ, frame_shape: Sequence[int], num_frames: int, costs: UnitCosts | None = None
) -> PaperConstants:
    """The formula's constants measured for ``model`` on ``num_frames`` frames of ``frame_shape``
    (meta device): the float backbone + classifier per frame, its stem + classifier, the policy.
    ``costs``: :func:`measure_unit_costs` of the same model and frames, if already measured."""
    costs = costs or measure_unit_costs(model, frame_shape)
    stem = mac_table(
        copy.deepcopy(model.recognizer.backbone).to("meta").eval(), torch.empty(1, *frame_shape)
    ).macs_of("conv1")
    frame, fc = costs[f"backbone@{model.precisions[0]}"], costs["classifier"]
    policy = costs["policy_frame"] * num_frames + costs.macs.get("policy_head", 0.0)
    return PaperConstants(
        (frame + fc) * num_frames / 1e9, (stem + fc) * num_frames / 1e9, policy / 1e9, source="measured"
    )


def _counts(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """(B, T) actions -> (B, A) how many frames took each action."""
    return torch.nn.functional.one_hot(actions, num_actions).sum(dim=1)


def paper_gflops(
    actions: torch.Tensor,
    precision_bits: Sequence[int],
    num_skips: int,
    *,
    arch: str | None = None,
    policy_bits: int = 32,
    constants: PaperConstants | None = None,
) -> dict[str, torch.Tensor]:
    """The original's GFLOPs per video: actions (B, T) -> ``backbone``, ``policy``, ``total`` (B,).

    ``precision_bits``: bits of each precision choice in action order (``VideoIQ.precision_bits``:
    the family, preceded by 32 for a float branch, which the original also charges as 8 bits).
    The constants are the paper's for ``arch``, or ``constants`` (:func:`measured_paper_constants`)."""
    if constants is None:
        if arch is None:
            raise ValueError("paper_gflops needs arch (the paper's constants) or constants")
        constants = paper_constants(arch, policy_bits=policy_bits)
    codebook = torch.tensor(
        [paper_relative_cost(b) for b in precision_bits] + [0.0] * num_skips, dtype=torch.float64
    )
    expected = (_counts(actions, len(codebook)).double() * codebook).sum(dim=1) / actions.shape[1]
    backbone = constants.backbone_gflops(expected)
    policy = torch.full_like(backbone, constants.policy)
    return {"backbone": backbone, "policy": policy, "total": backbone + policy}


def measure_unit_costs(model: VideoIQ, frame_shape: Sequence[int] = (3, 224, 224)) -> UnitCosts:
    """MACs of one execution of each unit, on the meta device: ``backbone@{p}`` (one frame at
    precision ``p`` - a bit width or ``float`` - stem included; every bit width runs the same MACs,
    measured once), ``classifier`` (one video), ``policy_frame`` (MobileNetV2 on one resized frame,
    one LSTM step, the action layer) and ``policy_head`` (one video, if any)."""
    meta = copy.deepcopy(model).to("meta").eval()
    frame = torch.empty(1, *frame_shape, device="meta")
    policy = meta.policy
    hidden = torch.empty(1, policy.rnn.hidden_size, device="meta")
    costs = UnitCosts()
    for precision in meta.precisions:
        if precision in meta.family[1:]:
            costs[f"backbone@{precision}"] = costs[f"backbone@{meta.family[0]}"]
            continue
        costs.measure(f"backbone@{precision}", meta.precision_features, frame, precision)
    costs.measure(
        "classifier", meta.recognizer.fc, torch.empty(1, meta.recognizer.num_features, device="meta")
    )

    def policy_step() -> None:
        feats = policy.frame_features(frame[:, None])[:, 0]
        h, _ = policy.rnn(feats, (hidden, hidden))
        policy.linear(h)

    costs.measure("policy_frame", policy_step)
    if policy.fc is not None:
        costs.measure("policy_head", policy.fc, hidden)
    return costs


def video_macs(
    actions: torch.Tensor, costs: UnitCosts, precisions: Sequence[int | str], num_skips: int
) -> dict[str, torch.Tensor]:
    """MACs per video of a dynamic inference: actions (B, T) -> ``backbone``, ``policy``,
    ``classifier``, ``total`` (B,) float64. ``precisions``: ``VideoIQ.precisions``."""
    counts = _counts(actions, len(precisions) + num_skips)
    backbone = per_sample_macs({f"backbone@{p}": counts[:, i] for i, p in enumerate(precisions)}, costs)
    policy_units = {"policy_frame": float(actions.shape[1])}
    if "policy_head" in costs.macs:
        policy_units["policy_head"] = 1.0
    policy = per_sample_macs(policy_units, costs).expand_as(backbone)
    classifier = per_sample_macs({"classifier": 1.0}, costs).expand_as(backbone)
    return {
        "backbone": backbone,
        "policy": policy,
        "classifier": classifier,
        "total": backbone + policy + classifier,
    }


def frame_bitops(model: VideoIQ, frame_shape: Sequence[int] = (3, 224, 224)) -> dict[int | str, int]:
    """BitOPs of one frame through the backbone at each precision choice (meta device)."""
    frame = torch.empty(1, *frame_shape)
    out: dict[int | str, int] = {}
    if model.float_branch is not None:
        w, a = FLOAT_BITS
        out["float"] = mac_table(copy.deepcopy(model.float_branch).to("meta").eval(), frame).total * w * a
    backbone = copy.deepcopy(model.recognizer.backbone).to("meta").eval()
    quantised = [name for name, m in backbone.named_modules() if isinstance(m, QConv2d)]
    table = mac_table(backbone, frame)  # per-layer MACs do not depend on the bit width
    for bits in model.family:
        out[bits] = bitops_table(table, {name: (bits, bits) for name in quantised}).total
    return out


def video_bitops(
    actions: torch.Tensor,
    per_frame: dict[int | str, int],
    costs: UnitCosts,
    precisions: Sequence[int | str],
    num_skips: int,
) -> torch.Tensor:
    """BitOPs per video: kept frames at their precisions + float classifier and policy (B,)."""
    counts = _counts(actions, len(precisions) + num_skips).double()
    backbone = sum(counts[:, i] * float(per_frame[p]) for i, p in enumerate(precisions))
    float_macs = video_macs(actions, costs, precisions, num_skips)
    w, a = FLOAT_BITS
    return backbone + (float_macs["policy"] + float_macs["classifier"]) * (w * a)


def static_costs(model: nn.Module, clip_shape: Sequence[int], bits: int | None = None) -> dict[str, float]:
    """MACs and BitOPs of one video through a static network (meta device): the float teacher
    (``bits=None``, every layer 32 x 32) or the any-precision ResNet at ``bits``.
    ``clip_shape``: (T, 3, H, W)."""
    meta = copy.deepcopy(model).to("meta").eval()
    clip = torch.empty(1, *clip_shape)
    if isinstance(meta, AnyPrecisionResNet):
        if bits is None:
            raise ValueError("the any-precision network needs a bit width to cost")
        meta.set_bit_width(bits)
        table = mac_table(meta, clip, bits)
        quantised = {f"{n}": (bits, bits) for n, m in meta.named_modules() if isinstance(m, QConv2d)}
        bitops = bitops_table(table, lambda name: quantised.get(name)).total
    else:
        table = mac_table(meta, clip)
        bitops = bitops_table(table, {}).total
    return {"macs": float(table.total), "bitops": float(bitops)}
