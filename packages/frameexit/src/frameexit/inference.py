"""Batched early-exit inference with per-video MACs.

A batch of videos advances step by step. After each step the videos that exit leave the active
set, so the backbone runs - and the data source decodes - only the frames still needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from effvid.flops import UnitCosts, per_sample_macs
from frameexit.model import FrameExitModel

__all__ = [
    "ExitGuard",
    "ExitResult",
    "FrameFeatures",
    "decision_scores",
    "early_exit",
    "guard_margins",
    "measure_unit_costs",
    "video_macs",
]

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
class ExitGuard:
    """Exit decisions of an approximate frame network (int8, bf16) checked by an exact one.

    With a guard, :func:`early_exit` runs the approximate ``features`` and, whenever a decision's
    score (:meth:`FrameExitModel.exit_score`) lies within its step's ``margins`` entry of its
    threshold, makes that decision again from the video's frames through ``exact`` (every frame
    so far), and runs that video through ``exact`` from then on. A decision further from its
    threshold than the approximation can move it is the exact network's decision too, so the
    exits are those of ``exact`` as long as the approximation's error stays below the margins;
    :func:`guard_margins` measures that error. The probabilities of videos that were never
    re-decided come from the approximate features.
    """

    exact: Callable[[torch.Tensor], torch.Tensor]
    margins: Sequence[float]  # logit distances, one per decision step 0..T-2

    def __post_init__(self) -> None:
        if not all(m >= 0 and math.isfinite(m) for m in self.margins):
            raise ValueError(
                f"the exit guard's margins must be finite logit distances >= 0, got {list(self.margins)}"
            )


@dataclass
class ExitResult:
    exit_step: torch.Tensor  # (B,) int64, 0-based step at which each video stopped
    probs: torch.Tensor  # (B, K) class probabilities from the exiting step's classifier
    logits: torch.Tensor  # (B, K)
    rechecked: torch.Tensor  # (B,) bool: a guard re-made one of the video's decisions exactly

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
    guard: ExitGuard | None = None,
) -> ExitResult:
    """Run FrameExit on ``batch_size`` videos whose frames ``load_step`` supplies step by step.

    ``max_steps`` (default T) caps the steps: with ``max_steps = k`` every video still active at
    step k-1 exits there with classifier k-1 (the "first k frames" baseline when the gates are
    switched off). ``exits=False`` runs the model statically: no step-0 classifier, no gate, every
    video classified once after its last step. ``features`` replaces ``model.frame_features`` (an
    optimised copy of it, e.g. under autocast); its output is used in float32. ``guard``: exit
    decisions near their thresholds are re-made by an exact frame network (:class:`ExitGuard`).
    """
    model.eval()
    device = device or next(model.parameters()).device
    steps = min(max_steps or model.num_frames, model.num_frames)
    approx = features or model.frame_features
    exit_step = torch.full((batch_size,), -1, dtype=torch.int64)
    logits_out = torch.zeros(batch_size, model.num_classes)
    z_prev = torch.zeros(batch_size, model.hidden, device=device)
    exact = torch.zeros(batch_size, dtype=torch.bool)  # videos the guard switched to the exact network
    active = torch.arange(batch_size)
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (videos, frames) per step, for the guard

    def frame_features(frames: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if guard is None or not rows.any():
            return approx(frames).float()
        if rows.all():
            return guard.exact(frames).float()
        h = torch.empty(len(frames), model.hidden, device=device)
        h[~rows] = approx(frames[~rows]).float()
        h[rows] = guard.exact(frames[rows]).float()
        return h

    for step in range(steps):
        frames = load_step(active.tolist(), step).to(device, non_blocking=True)
        if guard is not None:
            history.append((active, frames))
        h = frame_features(frames, exact[active].to(device))
        zp = z_prev[active.to(device)] if step else None
        z = h if zp is None else torch.maximum(h, zp)
        logits = model.classify(z, 0) if step == 0 and (exits or steps == 1) else None
        if step == steps - 1:
            leaving = torch.ones(len(active), dtype=torch.bool, device=device)
        elif not exits:
            leaving = torch.zeros(len(active), dtype=torch.bool, device=device)
        else:
            if guard is not None:
                z, zp, logits = _recheck(model, guard, history, exact, active, step, z, zp, logits)
            leaving = model.exit_decision(z, zp, step, logits)
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
    return ExitResult(
        exit_step=exit_step,
        probs=torch.softmax(logits_out, dim=1),
        logits=logits_out,
        rechecked=exact,
    )


def _recheck(
    model: FrameExitModel,
    guard: ExitGuard,
    history: list[tuple[torch.Tensor, torch.Tensor]],
    exact: torch.Tensor,
    active: torch.Tensor,
    step: int,
    z: torch.Tensor,
    zp: torch.Tensor | None,
    logits: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The guard's part of a step: videos whose decision is within the margin and that still run
    approximately get their running max (and step-0 logits) recomputed exactly from their frames."""
    score = model.exit_score(z, zp, step, logits)
    near = ((score - model.threshold_logit(step)).abs() <= guard.margins[step]).cpu() & ~exact[active]
    if not near.any():
        return z, zp, logits
    rows = near.nonzero().squeeze(1)
    videos = active[rows]
    h = torch.stack(
        [guard.exact(frames[torch.isin(ids, videos).to(frames.device)]).float() for ids, frames in history]
    )
    pooled = torch.cummax(h, dim=0).values  # (step + 1, n, D): exact running max at every step
    rows = rows.to(z.device)
    z = z.clone()
    z[rows] = pooled[-1]
    if zp is not None:
        zp = zp.clone()
        zp[rows] = pooled[-2]
    if logits is not None:
        logits = logits.clone()
        logits[rows] = model.classify(pooled[-1], 0)
    exact[videos] = True
    return z, zp, logits


@torch.no_grad()
def decision_scores(model: FrameExitModel, h: torch.Tensor) -> torch.Tensor:
    """Per-frame features of whole clips (V, S, D) in processing order -> the score
    (:meth:`FrameExitModel.exit_score`) of every exit decision at steps 0..S-2, (V, S-1)."""
    z = torch.cummax(h.float(), dim=1).values
    scores = [model.exit_score(z[:, 0], None, 0, model.classify(z[:, 0], 0))]
    scores += [model.exit_score(z[:, s], z[:, s - 1], s) for s in range(1, h.shape[1] - 1)]
    return torch.stack(scores, dim=1)


def guard_margins(
    model: FrameExitModel, exact: torch.Tensor, approx: torch.Tensor, factor: float
) -> list[float]:
    """Per-step margins for an :class:`ExitGuard`: ``factor`` times the largest difference
    between the decision scores of the approximate and the exact features of the same clips
    (V, S, D), step by step."""
    if exact.shape[1] < 2:
        raise ValueError(
            f"measuring the guard's margins needs clips of 2 frames or more, got {exact.shape[1]}"
        )
    deviation = (decision_scores(model, approx) - decision_scores(model, exact)).abs().amax(dim=0)
    return [factor * float(d) for d in deviation]


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
