"""One training step per stage of the original recipe, as modules: ``forward(batch) -> (loss, logs)``.

``batch`` is the core dataset's dict: ``"video"`` (B, T, 3, H, W) and ``"label"`` (B,) int64.

=====  ==========================================  ==============================================
stage  trains                                      how
=====  ==========================================  ==============================================
0      one backbone and its head (glance or focus)  per-frame logits on the glance-size frames,
                                                    averaged over T, cross-entropy
1      focus + classifier                           random patches (independent per frame), the
                                                    glance frozen (eval, no grad); CE at every step
2      policy                                       PPO on the reward p_y(policy patch) -
                                                    p_y(random patch), everything else frozen
3      classifier                                   argmax positions, glance/focus/policy frozen;
                                                    CE at every step (dropout active)
=====  ==========================================  ==============================================

Each module sets the train/eval modes of the parts itself (in training mode), so the frozen
parts' BatchNorm statistics never move, and lists the parameters its stage trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adafocus.crop import random_top_left
from adafocus.model import AdaFocus
from adafocus.policy import Rollout, discounted_returns, ppo_loss

__all__ = ["BackbonePretrainStep", "ClassifierStep", "PolicyStep", "WarmUpStep", "step_cross_entropy"]


def step_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all steps: logits (B, T, K), labels (B,) -> scalar."""
    b, t, _ = logits.shape
    return F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(t))


class _Stage(nn.Module):
    def __init__(self, model: AdaFocus) -> None:
        super().__init__()
        self.model = model

    def _trained(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> _Stage:
        """Train mode puts only this stage's trained parts in train mode; the rest stays in eval."""
        super().train(mode)
        if mode:
            self.model.eval()
            for part in self._trained():
                part.train()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for part in self._trained() for p in part.parameters()]


class BackbonePretrainStep(_Stage):
    """Stage 0: ``which`` = ``"glance"`` or ``"focus"``; its head classifies every frame.

    As the original, both see the frames at the glance size, and the glance's head has a
    dropout of 0.2 in front.
    """

    def __init__(self, model: AdaFocus, which: str = "glance") -> None:
        if which not in ("glance", "focus"):
            raise ValueError(f"which must be 'glance' or 'focus', got {which!r}")
        super().__init__(model)
        self.which = which
        self.backbone = getattr(model, which)
        if isinstance(self.backbone.head, nn.Identity):
            raise ValueError(
                f"the {which} backbone has no classification head; build with backbone_heads=True"
            )
        self.dropout = nn.Dropout(0.2 if which == "glance" else 0.0)

    def _trained(self) -> tuple[nn.Module, ...]:
        return (self.backbone,)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video, labels = batch["video"], batch["label"]
        b, t = video.shape[:2]
        features = self.backbone.forward_features(self.model.glance_input(video.flatten(0, 1)))
        logits = self.backbone.forward_head(self.dropout(features)).view(b, t, -1).mean(1)
        loss = F.cross_entropy(logits, labels)
        return loss, {"acc": float((logits.argmax(1) == labels).float().mean())}


class WarmUpStep(_Stage):
    """Stage 1: focus + classifier on random patches; the glance is frozen."""

    def __init__(self, model: AdaFocus, *, generator: torch.Generator | None = None) -> None:
        super().__init__(model)
        self.generator = generator

    def _trained(self) -> tuple[nn.Module, ...]:
        return (self.model.focus, self.model.classifier)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video, labels = batch["video"], batch["label"]
        b, t, _, h, w = video.shape
        corners = random_top_left(b * t, (h, w), self.model.patch_size, generator=self.generator)
        m = self.model
        with torch.no_grad():
            _, pooled = m.glance_frames(video.flatten(0, 1))
        local = m.focus_patches(video.flatten(0, 1), corners.to(video.device))
        logits, _ = m.classifier(torch.cat([pooled, local], 1).view(b, t, -1))
        loss = step_cross_entropy(logits, labels)
        return loss, {"acc_last": float((logits[:, -1].argmax(1) == labels).float().mean())}


class PolicyStep(_Stage):
    """Stage 2: collect an episode with sampled positions, reward each step against a random
    patch of the same frame, and return the PPO loss of that rollout (one epoch, as the original;
    for several epochs per rollout use :meth:`collect` with :func:`~adafocus.policy.ppo_update`).

    Reward ``r_t = softmax(c(h_{t-1}, [g_t, l_t^policy]))[y] - softmax(c(h_{t-1}, [g_t, l_t^random]))[y]``:
    both from the classifier state before step t; only the policy step advances that state.
    """

    def __init__(
        self,
        model: AdaFocus,
        *,
        gamma: float = 0.7,
        clip: float = 0.2,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model)
        self.gamma, self.clip, self.value_coef, self.entropy_coef = gamma, clip, value_coef, entropy_coef
        self.generator = generator

    def _trained(self) -> tuple[nn.Module, ...]:
        return (self.model.policy,)

    @torch.no_grad()
    def collect(self, batch: dict) -> tuple[Rollout, dict[str, float]]:
        """Run the episode: states (T, B, C, h, w), actions, log-probs and rewards (T, B)."""
        video, labels = batch["video"], batch["label"]
        b, t, _, h, w = video.shape
        m = self.model
        out = m(video, sample=True, generator=self.generator)
        random_corners = random_top_left(b * t, (h, w), m.patch_size, generator=self.generator).to(
            video.device
        )
        baseline_local = m.focus_patches(video.flatten(0, 1), random_corners)
        pooled = out.features[..., : m.glance.num_features].flatten(0, 1)
        baseline_features = torch.cat([pooled, baseline_local], 1).view(b, t, -1)
        # classifier states before each step: h_{-1} = 0, then the policy sequence's states
        states, _ = m.classifier.gru(out.features)
        before = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1)
        baseline_logits, _ = m.classifier(baseline_features.flatten(0, 1)[:, None], before.flatten(0, 1))
        p_policy = torch.softmax(out.logits, 2).gather(2, labels.view(b, 1, 1).expand(b, t, 1))[..., 0]
        p_base = torch.softmax(baseline_logits.view(b, t, -1), 2).gather(
            2, labels.view(b, 1, 1).expand(b, t, 1)
        )
        rewards = p_policy - p_base[..., 0]
        rollout = Rollout(
            states=out.glance_maps.transpose(0, 1).contiguous(),
            actions=out.actions.t().contiguous(),
            log_probs=out.log_probs.t().contiguous(),
            rewards=rewards.t().contiguous(),
        )
        return rollout, {"reward": float(rewards.mean()), "p_true_last": float(p_policy[:, -1].mean())}

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        rollout, logs = self.collect(batch)
        returns = discounted_returns(rollout.rewards, self.gamma)
        log_probs, values, entropy = self.model.policy.evaluate(rollout.states, rollout.actions)
        loss, ppo_logs = ppo_loss(
            log_probs,
            rollout.log_probs,
            returns,
            values,
            entropy,
            clip=self.clip,
            value_coef=self.value_coef,
            entropy_coef=self.entropy_coef,
        )
        return loss, {**logs, **ppo_logs}


class ClassifierStep(_Stage):
    """Stage 3: the classifier alone on the policy's argmax patches (the released code freezes
    the focus network here, although the paper says it is fine-tuned too)."""

    def _trained(self) -> tuple[nn.Module, ...]:
        return (self.model.classifier,)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video, labels = batch["video"], batch["label"]
        m = self.model
        with torch.no_grad():
            features = m(video, sample=False).features
        logits, _ = m.classifier(features)
        loss = step_cross_entropy(logits, labels)
        return loss, {"acc_last": float((logits[:, -1].argmax(1) == labels).float().mean())}
