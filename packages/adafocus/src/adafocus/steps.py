"""One training step per stage of the original recipe, as modules: ``forward(batch) -> (loss, logs)``.

``batch`` is the core dataset's dict: ``"video"`` (B, T, 3, H, W) and ``"label"`` (B,) int64.

=====  ==========================================  ==============================================
stage  trains                                      how
=====  ==========================================  ==============================================
0      one backbone and its head (glance or focus)  per-frame logits (the glance at its size, the
                                                    focus on full frames), averaged over T, CE
1      focus + classifier                           random patches (independent per frame), the
                                                    glance frozen (eval, no grad); CE at every step
2      policy                                       PPO on the reward p_y(policy patch) -
                                                    p_y(random patch), everything else frozen
2 (V2) policy                                       AdaFocusV2-style: the classifier's CE through a
                                                    differentiable crop, everything else frozen
3      classifier (optionally focus)                argmax positions, glance/policy frozen;
                                                    CE at every step (dropout active)
=====  ==========================================  ==============================================

Each module sets the train/eval modes of the parts itself (in training mode), so the frozen
parts' BatchNorm statistics never move, and lists the parameters its stage trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from adafocus.crop import crop_patches_differentiable, grid_positions, random_top_left
from adafocus.model import AdaFocus
from adafocus.policy import Rollout, discounted_returns, ppo_loss

__all__ = [
    "BackbonePretrainStep",
    "ClassifierStep",
    "DifferentiablePolicyStep",
    "PolicyStep",
    "WarmUpStep",
    "step_cross_entropy",
]


@contextlib.contextmanager
def _frozen(*parts: nn.Module) -> Iterator[None]:
    """Build the graph with ``parts``' parameters as constants: gradients flow through the parts
    to their inputs, never into their weights (the flags are restored afterwards)."""
    params = [p for part in parts for p in part.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


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

    The glance sees frames resized to the glance size, as it will in the later stages; the focus
    network sees the full-resolution frames its patches will be cut from. (The original trains
    both on the full 224-px frames, which is also its glance size, so the two agree there.) As
    the original, the glance's head has a dropout of 0.2 in front.
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
        frames = video.flatten(0, 1)
        if self.which == "glance":
            frames = self.model.glance_input(frames)
        features = self.backbone.forward_features(frames)
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
    both from the classifier state before step t; only the policy step advances that state
    (``reward="sequence"``, the original). With ``reward="frame"`` both terms come from a fresh
    (zero) classifier state, as at the first step: each patch is judged on what it shows alone.
    The original's reward vanishes once the classifier is confident, so after the first good
    patch nothing rewards following a moving object; the frame reward does not vanish.
    """

    def __init__(
        self,
        model: AdaFocus,
        *,
        gamma: float = 0.7,
        clip: float = 0.2,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        reward: str = "sequence",
        generator: torch.Generator | None = None,
    ) -> None:
        if reward not in ("sequence", "frame"):
            raise ValueError(f"reward must be 'sequence' or 'frame', got {reward!r}")
        super().__init__(model)
        self.gamma, self.clip, self.value_coef, self.entropy_coef = gamma, clip, value_coef, entropy_coef
        self.reward, self.generator = reward, generator

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
        if self.reward == "sequence":
            # classifier states before each step: h_{-1} = 0, then the policy sequence's states
            states, _ = m.classifier.gru(out.features)
            before = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1).flatten(0, 1)
            policy_logits = out.logits
        else:  # every frame alone, from the zero state
            before = None
            policy_logits, _ = m.classifier(out.features.flatten(0, 1)[:, None])
            policy_logits = policy_logits.view(b, t, -1)
        baseline_logits, _ = m.classifier(baseline_features.flatten(0, 1)[:, None], before)
        p_policy = torch.softmax(policy_logits, 2).gather(2, labels.view(b, 1, 1).expand(b, t, 1))[..., 0]
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
        p_last = torch.softmax(out.logits[:, -1], 1).gather(1, labels[:, None])
        return rollout, {"reward": float(rewards.mean()), "p_true_last": float(p_last.mean())}

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


class DifferentiablePolicyStep(_Stage):
    """Stage 2, AdaFocusV2-style: the policy learns from the classifier's cross-entropy through a
    differentiable crop (``affine_grid`` + ``grid_sample``) instead of by reinforcement.

    The policy keeps its categorical grid, so inference (argmax, hard crop) is unchanged. Each
    frame's position is ``a = sum_k y_k g_k`` over the grid points ``g_k``, where ``y`` is

    * ``straight_through`` (default): a sampled one-hot in the forward pass (the patch sits on a
      grid point, as at inference) with the gradient of the probabilities in the backward pass;
    * ``expected``: the probabilities themselves (the patch sits at the expected position).

    Glance, focus and classifier are frozen (eval mode, no parameter gradients); gradients reach
    the policy through the focus network's input. The loss is the mean CE over all steps.
    """

    def __init__(
        self,
        model: AdaFocus,
        *,
        estimator: str = "straight_through",
        generator: torch.Generator | None = None,
    ) -> None:
        if estimator not in ("straight_through", "expected"):
            raise ValueError(f"estimator must be 'straight_through' or 'expected', got {estimator!r}")
        super().__init__(model)
        self.estimator, self.generator = estimator, generator

    def _trained(self) -> tuple[nn.Module, ...]:
        return (self.model.policy,)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video, labels = batch["video"], batch["label"]
        b, t, _, h, w = video.shape
        m = self.model
        frames = video.flatten(0, 1)
        with torch.no_grad():
            maps, pooled = m.glance_frames(frames)
        maps = maps.view(b, t, *maps.shape[1:])
        hidden, step_logits = None, []
        for step in range(t):
            logits, hidden = m.policy.step(maps[:, step], hidden)
            step_logits.append(logits)
        probs = torch.softmax(torch.stack(step_logits, 1), dim=2)  # (B, T, n*n)
        if self.estimator == "straight_through":
            drawn = torch.multinomial(probs.detach().flatten(0, 1), 1, generator=self.generator)
            hard = F.one_hot(drawn[:, 0], probs.shape[-1]).view_as(probs).to(probs.dtype)
            weights = hard - probs.detach() + probs
        else:
            weights = probs
        positions = weights @ grid_positions(m.grid, device=video.device).to(probs.dtype)  # (B, T, 2)
        span = torch.tensor([h - m.patch_size, w - m.patch_size], dtype=probs.dtype, device=video.device)
        patches = crop_patches_differentiable(frames, (positions * span).flatten(0, 1), m.patch_size)
        with _frozen(m.focus, m.classifier):
            local = m.focus.forward_features(patches)
            logits, _ = m.classifier(torch.cat([pooled, local], 1).view(b, t, -1))
        loss = step_cross_entropy(logits, labels)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        return loss, {
            "acc_last": float((logits[:, -1].argmax(1) == labels).float().mean()),
            "entropy": float(entropy.detach()),
        }


class ClassifierStep(_Stage):
    """Stage 3: the classifier on the policy's argmax patches; with ``train_focus`` the focus
    network too (the paper fine-tunes both; the released code only the classifier)."""

    def __init__(self, model: AdaFocus, *, train_focus: bool = False) -> None:
        super().__init__(model)
        self.train_focus = train_focus

    def _trained(self) -> tuple[nn.Module, ...]:
        if self.train_focus:
            return (self.model.focus, self.model.classifier)
        return (self.model.classifier,)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video, labels = batch["video"], batch["label"]
        b, t = video.shape[:2]
        m = self.model
        frames = video.flatten(0, 1)
        with torch.no_grad():
            maps, pooled = m.glance_frames(frames)
            actions, _ = m.choose(maps.view(b, t, *maps.shape[1:]), sample=False)
            corners = m.actions_to_top_left(actions, tuple(video.shape[-2:])).flatten(0, 1)
        with torch.set_grad_enabled(self.train_focus and torch.is_grad_enabled()):
            local = m.focus_patches(frames, corners)
        features = torch.cat([pooled, local], 1).view(b, t, -1)
        logits, _ = m.classifier(features)
        loss = step_cross_entropy(logits, labels)
        return loss, {"acc_last": float((logits[:, -1].argmax(1) == labels).float().mean())}
