"""Test helpers: random weights that are never identities by accident."""

from __future__ import annotations

import torch
from torch import nn


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, then eval mode.

    He-scaled matrices and BN scales near 1 keep the signal alive through deep random nets, so
    that the policy's choices depend on the frames rather than on its biases.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var") or (t.dim() == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return model.eval()


@torch.no_grad()
def center_actor(policy: nn.Module, maps: torch.Tensor) -> None:
    """Make a random policy's choice depend on its input: shift the actor's bias so that the
    logits average zero over the hidden states these glance maps (B, T, C, h, w) produce.

    In a random net the hidden states of different frames share a large common part, which
    would otherwise pick the same position everywhere.
    """
    hidden, states = None, []
    for t in range(maps.shape[1]):
        _, hidden = policy.step(maps[:, t], hidden)
        states.append(hidden)
    mean = torch.cat(states).mean(0)
    policy.actor.bias.copy_(-policy.actor.weight @ mean)
