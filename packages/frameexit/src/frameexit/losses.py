"""Training objectives (not in the original repository; from the paper).

* Stage 1: cross-entropy of every step's classifier on the running-max features (deep supervision).
* Stage 2: each gate learns to exit where the frozen classifier is already good enough:
  pseudo-label ``y_t = 1[CE_t <= beta * exp(t / 2)]`` with t the 1-based step (frames seen), and
  binary cross-entropy on the gate logits. Larger beta -> earlier exits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gate_loss", "gate_pseudo_labels", "step_cross_entropy", "step_losses"]


def step_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-video, per-step cross-entropy (B, T). ``target``: class indices (B,) or multi-hot (B, K)
    (multi-label videos: cross-entropy to the uniform distribution over their labels)."""
    b, t, k = logits.shape
    flat = logits.reshape(b * t, k).float()
    if target.dim() == 1:
        return F.cross_entropy(flat, target.repeat_interleave(t), reduction="none").view(b, t)
    dist = target.float() / target.float().sum(dim=1, keepdim=True).clamp(min=1)
    return -(dist.repeat_interleave(t, dim=0) * F.log_softmax(flat, dim=1)).sum(dim=1).view(b, t)


def step_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Stage-1 loss: mean over videos and steps of :func:`step_losses`."""
    return step_losses(logits, target).mean()


def gate_pseudo_labels(ce: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, S) per-step losses of steps 1..S (0-based steps 1..S) -> float labels (B, S), 1 = exit.

    Column j is 0-based step j + 1, i.e. 1-based step t = j + 2 frames seen, so the tolerance is
    ``beta * exp((j + 2) / 2)``.
    """
    steps = torch.arange(ce.shape[1], device=ce.device, dtype=ce.dtype) + 2
    return (ce <= beta * torch.exp(steps / 2)).to(ce.dtype)


def gate_loss(gate_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(gate_logits.float(), labels)


def tolerance(beta: float, step: int) -> float:
    """The pseudo-label threshold at 0-based ``step``: ``beta * exp((step + 1) / 2)``."""
    return beta * math.exp((step + 1) / 2)
