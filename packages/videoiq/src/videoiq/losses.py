"""VideoIQ's training objectives (``utils/utils.py: train_ap, train_ada`` of the original).

For N videos, T frames, A = #bits + #skips actions, decisions r (N, T, A) one-hot and
log-probabilities p (N, T, A)::

    KD(z, z_fp)    = mean_n  -sum_c softmax(z_fp)_c log softmax(z)_c       (temperature 1, no T^2)
    balanced(r)    = sum_a (mean_{n,t} r_{n,t,a} - 1/A)^2
    efficiency(r)  = sum_a mean_{n,t} r_{n,t,a} c_a,  c = [min(b, 8)^2 / 64 per bit width, 0 per skip]
    entropy(p)     = mean_{n,t} -sum_a exp(p_{n,t,a}) p_{n,t,a}

The efficiency term uses the hard decisions, whose gradient reaches the policy straight through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from videoiq.cost import paper_relative_cost

__all__ = [
    "balanced_loss",
    "classification_loss",
    "efficiency_codebook",
    "efficiency_loss",
    "kd_loss",
    "policy_entropy",
]


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (N, K) with class indices (N,) or multi-hot targets (N, K) (spread
    uniformly over a video's labels)."""
    if target.dim() == 1:
        return F.cross_entropy(logits.float(), target)
    dist = target.float() / target.float().sum(dim=1, keepdim=True).clamp(min=1)
    return -(dist * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Distillation to the teacher's softmax (N, K), (N, K) -> scalar; no gradient to the teacher."""
    target = F.softmax(teacher_logits.detach().float(), dim=1)
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def balanced_loss(decisions: torch.Tensor) -> torch.Tensor:
    """Squared distance of the action frequencies (N, T, A) from uniform -> scalar."""
    usage = decisions.float().mean(dim=(0, 1))
    return ((usage - 1.0 / decisions.shape[-1]) ** 2).sum()


def efficiency_codebook(precision_bits: Sequence[int], num_skips: int) -> torch.Tensor:
    """Relative cost of each action (A,): ``min(b, 8)^2 / 64`` per precision choice (a float
    branch counts as 32 bits), 0 per skip option."""
    return torch.tensor([paper_relative_cost(b) for b in precision_bits] + [0.0] * num_skips)


def efficiency_loss(decisions: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Expected relative backbone cost of the decisions (N, T, A) -> scalar."""
    return (decisions.float().mean(dim=(0, 1)) * codebook.to(decisions.device)).sum()


def policy_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the per-frame action distributions, log-probabilities (N, T, A) -> scalar."""
    return (-(log_probs.exp() * log_probs).sum(dim=-1)).mean()
