"""Batched early-exit inference with per-video MACs.

A batch of videos advances step by step. After each step the videos that exit leave the active
set, so the backbone runs - and the data source decodes - only the frames still needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from effvid.flops import UnitCosts, per_sample_macs
from frameexit.model import FrameExitModel

__all__ = ["ExitResult", "FrameFeatures", "early_exit", "measure_unit_costs", "video_macs"]

# load_step(active: list of batch positions, step) -> frames (len(active), 3, H, W)
StepLoader = Callable[[Sequence[int], int], torch.Tensor]


class FrameFeatures(nn.Module):
    """The per-frame part of a FrameExit model, backbone + MLP, as one traceable module: frames
    (N, 3, H, W) -> features (N, hidden). It shares the model's weights; it is what
    :func:`effvid.models.optimize.optimize_for_inference` speeds up."""

    def __init__(self, model: FrameExitModel) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.mlp = model.mlp

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.backbone.forward_features(frames))


@dataclass
class ExitResult:
    exit_step: torch.Tensor  # (B,) int64, 0-based step at which each video stopped
    probs: torch.Tensor  # (B, K) class probabilities from the exiting step's classifier
    logits: torch.Tensor  # (B, K)

    @property
    def frames_used(self) -> torch.Tensor:
        return self.exit_step + 1


@torch.no_grad()
def early_exit(
    model: FrameExitModel,
    load_step: StepLoader,
    batch_size: int,
    *,
    device: torch.device | None = None,
    max_steps: int | None = None,
    exits: bool = True,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ExitResult:
    """Run FrameExit on ``batch_size`` videos whose frames ``load_step`` supplies step by step.

    ``max_steps`` (default T) caps the steps: with ``max_steps = k`` every video still active at
    step k-1 exits there with classifier k-1 (the "first k frames" baseline when the gates are
    switched off). ``exits=False`` runs the model statically: no step-0 classifier, no gate, every
    video classified once after its last step. ``features`` replaces ``model.frame_features`` (an
    optimised copy of it, e.g. under autocast); its output is used in float32.
    """
    model.eval()
    device = device or next(model.parameters()).device
    steps = min(max_steps or model.num_frames, model.num_frames)
    k = model.num_classes
    exit_step = torch.full((batch_size,), -1, dtype=torch.int64)
    logits_out = torch.zeros(batch_size, k)
    z_prev = torch.zeros(batch_size, model.hidden, device=device)
    active = torch.arange(batch_size)
    for step in range(steps):
        frames = load_step(active.tolist(), step).to(device, non_blocking=True)
        h = (features or model.frame_features)(frames).float()
        z = h if step == 0 else torch.maximum(h, z_prev[active.to(device)])
        logits = model.classify(z, 0) if step == 0 and (exits or steps == 1) else None
        if step == steps - 1:
            leaving = torch.ones(len(active), dtype=torch.bool, device=device)
        elif not exits:
            leaving = torch.zeros(len(active), dtype=torch.bool, device=device)
        else:
            leaving = model.exit_decision(z, z_prev[active.to(device)] if step else None, step, logits)
        if leaving.any():
            out = logits[leaving] if step == 0 else model.classify(z[leaving], step)
            gone = active[leaving.cpu()]
            exit_step[gone] = step
            logits_out[gone] = out.float().cpu()
        staying = ~leaving
        z_prev[active[staying.cpu()].to(device)] = z[staying]
        active = active[staying.cpu()]
        if len(active) == 0:
            break
    return ExitResult(exit_step=exit_step, probs=torch.softmax(logits_out, dim=1), logits=logits_out)


def measure_unit_costs(model: FrameExitModel, frame_shape: Sequence[int]) -> UnitCosts:
    """MACs of one execution of each unit, measured with FlopCounterMode on the meta device:
    ``backbone`` (one frame), ``mlp`` (one frame), ``classifier`` and ``gate`` (one evaluation)."""
    import copy

    meta = copy.deepcopy(model).to("meta").eval()
    frame = torch.empty(1, *frame_shape, device="meta")
    feats = torch.empty(1, meta.backbone.num_features, device="meta")
    z = torch.empty(1, meta.hidden, device="meta")
    costs = UnitCosts()
    costs.measure("backbone", meta.backbone.forward_features, frame)
    costs.measure("mlp", meta.mlp, feats)
    costs.measure("classifier", meta.classifiers[0], z)
    costs.measure("gate", meta.gates[0], z, z)
    return costs


def video_macs(
    exit_step: torch.Tensor, costs: UnitCosts, num_frames: int, *, exits: bool = True
) -> dict[str, torch.Tensor]:
    """Per-video MACs actually spent: ``total`` (backbone + MLP + gates + classifiers) and
    ``backbone`` (the papers' figure: processed frames x backbone cost).

    ``num_frames`` is the number of steps the run allowed (``max_steps`` when capped): the last
    allowed step exits without consulting its gate.
    """
    frames = exit_step + 1
    if exits:
        gates = torch.clamp(exit_step, max=num_frames - 2)  # steps 1..min(exit, T-2) consulted a gate
        classifiers = 1 + (exit_step > 0).long()  # step 0 always classifies; the exit step once more
    else:
        gates, classifiers = torch.zeros_like(exit_step), torch.ones_like(exit_step)
    total = per_sample_macs(
        {"backbone": frames, "mlp": frames, "gate": gates, "classifier": classifiers}, costs
    )
    return {"total": total, "backbone": per_sample_macs({"backbone": frames}, costs)}
