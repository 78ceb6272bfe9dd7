"""The recurrent patch policy (an actor-critic over grid positions) and PPO as pure functions.

::

    glance map m_t (N, C, h, w)
      --state_encoder: Conv1x1(C -> 32, no bias), ReLU, Flatten, Linear(32*h*w -> D), ReLU--> s_t (N, D)
      --GRU(D -> D), hidden carried over frames--> g_t (N, D)
      --actor: Linear(D -> n*n)--> logits over the n x n grid       (categorical)
      --critic: Linear(D -> 1)--> value V(s_t)                      (training only)

The policy sees only the current glance map and its own hidden state, so all T positions of a
clip are known before the focus network runs (that is what makes batched inference possible).
The module names follow the original's ``ActorCritic`` (``state_encoder.{0,3}``, ``gru``) except
that the actor outputs logits (the original appended a Softmax) and the heads are plain Linears.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchPolicy", "PolicyStep", "Rollout", "discounted_returns", "ppo_loss", "ppo_update"]


@dataclass
class PolicyStep:
    action: torch.Tensor  # (N,) int64 grid index
    log_prob: torch.Tensor  # (N,) log pi(action)
    hidden: torch.Tensor  # (N, D) the GRU state after this step
    logits: torch.Tensor  # (N, n*n)


class PatchPolicy(nn.Module):
    """Actor-critic over an ``grid x grid`` set of patch positions.

    Args:
        in_channels: C of the glance feature map (1280 for MobileNetV2).
        map_size: (h, w) of the glance feature map the policy is built for (7x7 at 224).
        grid: n, positions per side (n*n actions).
        hidden: D, encoder and GRU width (1024 in the paper).
        conv_channels: 1x1-conv reduction of the map (32 in the original).
    """

    def __init__(
        self,
        in_channels: int,
        map_size: tuple[int, int],
        *,
        grid: int = 7,
        hidden: int = 1024,
        conv_channels: int = 32,
    ) -> None:
        super().__init__()
        if grid < 2:
            raise ValueError(f"the patch grid needs at least 2 positions per side, got {grid}")
        self.in_channels, self.map_size, self.grid, self.hidden = in_channels, tuple(map_size), grid, hidden
        h, w = self.map_size
        self.state_encoder = nn.Sequential(
            nn.Conv2d(in_channels, conv_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(conv_channels * h * w, hidden),
            nn.ReLU(),
        )
        self.gru = nn.GRU(hidden, hidden)
        self.actor = nn.Linear(hidden, grid * grid)
        self.critic = nn.Linear(hidden, 1)

    @property
    def num_actions(self) -> int:
        return self.grid * self.grid

    def _check_map(self, fmap: torch.Tensor) -> None:
        if fmap.dim() != 4 or fmap.shape[1] != self.in_channels or tuple(fmap.shape[2:]) != self.map_size:
            h, w = self.map_size
            raise ValueError(
                f"the policy was built for glance feature maps of shape (N, {self.in_channels}, {h}, {w}), "
                f"got {tuple(fmap.shape)}; build it for this glance size (the glance map of a "
                f"{self.grid}x{self.grid} grid policy must have the size the policy's Linear expects)"
            )

    def encode(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, D)."""
        self._check_map(fmap)
        return self.state_encoder(fmap)

    def step(
        self, fmap: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: (N, C, h, w), hidden (N, D) or None (zeros) -> (logits (N, n*n), new hidden (N, D))."""
        state = self.encode(fmap)
        h0 = None if hidden is None else hidden[None]
        out, _ = self.gru(state[None], h0)
        return self.actor(out[0]), out[0]

    def act(
        self,
        fmap: torch.Tensor,
        hidden: torch.Tensor | None = None,
        *,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> PolicyStep:
        """Choose a position: sampled when ``sample`` (default: in training mode), else the argmax."""
        logits, new_hidden = self.step(fmap, hidden)
        log_probs = F.log_softmax(logits, dim=1)
        if self.training if sample is None else sample:
            action = torch.multinomial(log_probs.exp(), 1, generator=generator)[:, 0]
        else:
            action = logits.argmax(dim=1)
        return PolicyStep(action, log_probs.gather(1, action[:, None])[:, 0], new_hidden, logits)

    def evaluate(
        self, states: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Re-run a stored episode from a zero hidden state.

        Args:
            states: glance maps (T, N, C, h, w) as seen while acting.
            actions: (T, N) the actions taken.

        Returns:
            log pi(action) (T, N), V(s) (T, N), entropy (T, N).
        """
        t, n = actions.shape
        encoded = self.encode(states.flatten(0, 1)).view(t, n, -1)
        out, _ = self.gru(encoded)
        logits = self.actor(out)
        log_probs = F.log_softmax(logits, dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        chosen = log_probs.gather(-1, actions.long()[..., None])[..., 0]
        return chosen, self.critic(out)[..., 0], entropy


def discounted_returns(
    rewards: torch.Tensor, gamma: float, *, normalize: bool = True, eps: float = 1e-5
) -> torch.Tensor:
    """R_t = r_t + gamma * R_{t+1} over (T, N) rewards (no terminal flags: every episode is T steps).

    With ``normalize`` (the original) the returns are standardised over all T*N entries together:
    ``(R - mean) / (std + eps)`` with the unbiased std.
    """
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    if normalize:
        returns = (returns - returns.mean()) / (returns.std() + eps)
    return returns


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped PPO objective with a value loss and an entropy bonus, all (T, N) -> scalar.

    ``loss = mean(-min(rho * A, clip(rho, 1-eps, 1+eps) * A)) + value_coef * MSE(V, R)
    - entropy_coef * mean(H)`` with ``rho = exp(log_probs - old_log_probs)`` and advantage
    ``A = R - V`` (V detached), as the original (no GAE). On the first epoch of a rollout rho == 1
    and clipping does nothing; it engages from the second epoch on.
    """
    ratio = torch.exp(log_probs - old_log_probs.detach())
    advantages = returns - values.detach()
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    policy_loss = -surrogate.mean()
    value_loss = F.mse_loss(values, returns)
    mean_entropy = entropy.mean()
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    with torch.no_grad():
        logs = {
            "policy_loss": float(policy_loss),
            "value_loss": float(value_loss),
            "entropy": float(mean_entropy),
            "clip_fraction": float(((ratio - 1).abs() > clip).float().mean()),
            "approx_kl": float((old_log_probs - log_probs).mean()),
        }
    return loss, logs


@dataclass
class Rollout:
    """One episode of a batch, as collected while acting (all detached)."""

    states: torch.Tensor  # (T, N, C, h, w) glance maps
    actions: torch.Tensor  # (T, N) int64
    log_probs: torch.Tensor  # (T, N) log pi_old(action)
    rewards: torch.Tensor  # (T, N)


def ppo_update(
    policy: PatchPolicy,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    *,
    epochs: int = 1,
    gamma: float = 0.7,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> list[dict[str, float]]:
    """``epochs`` optimiser steps of :func:`ppo_loss` on one rollout; returns each epoch's logs.

    The original used ``epochs=1`` (so its PPO is effectively an advantage actor-critic); the old
    log-probabilities come from the rollout, so no second copy of the policy is needed.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    returns = discounted_returns(rollout.rewards, gamma)
    history = []
    for _ in range(epochs):
        log_probs, values, entropy = policy.evaluate(rollout.states, rollout.actions)
        loss, logs = ppo_loss(
            log_probs,
            rollout.log_probs,
            returns,
            values,
            entropy,
            clip=clip,
            value_coef=value_coef,
            entropy_coef=entropy_coef,
        )
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"the PPO loss is {float(loss.detach())} at update epoch {len(history) + 1}; "
                "stopped before updating the policy"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"loss": float(loss.detach()), **logs})
    return history
