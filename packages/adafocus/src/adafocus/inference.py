"""Batched inference with a training-free early exit (the "+" of AdaFocus, as AdaFocusV2 does it).

The original released no AdaFocus+ code; its successors exit when the classifier is confident.
Here a batch of videos advances step by step over an active set: each step glances, picks a
position, focuses and advances the classifier for the videos still active, and a video leaves
the set once its step prediction's top softmax probability reaches ``threshold`` (or at the last
step). Without a threshold every video runs all T steps and the result equals the batched
:meth:`~adafocus.model.AdaFocus.forward` (which is faster then: one glance and one focus pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adafocus.crop import random_top_left
from adafocus.model import AdaFocus
from effvid.data.streaming import StepLoader

__all__ = ["POLICIES", "ExitResult", "early_exit"]

#: how positions are chosen: the policy's argmax (the original's evaluation), a sample from it,
#: or uniformly random corners (stage 1's patches; the policy does not run)
POLICIES = ("argmax", "sample", "random")


@dataclass
class ExitResult:
    exit_step: torch.Tensor  # (B,) int64, 0-based step after which each video stopped
    logits: torch.Tensor  # (B, K) the classifier's prediction at that step
    top_left: torch.Tensor  # (B, T, 2) int64 patch corners; -1 for steps not run
    actions: torch.Tensor  # (B, T) int64 grid positions; -1 for steps not run (or random patches)
    step_logits: torch.Tensor  # (B, T, K) the prediction after every step; NaN for steps not run

    @property
    def steps_used(self) -> torch.Tensor:
        return self.exit_step + 1

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)


@torch.no_grad()
def early_exit(
    model: AdaFocus,
    clips: torch.Tensor | StepLoader,
    batch_size: int | None = None,
    *,
    num_steps: int | None = None,
    threshold: float | None = None,
    policy: str = "argmax",
    generator: torch.Generator | None = None,
) -> ExitResult:
    """Run AdaFocus step by step on a batch, dropping videos once they are confident.

    Args:
        model: an :class:`AdaFocus` (run in eval mode: argmax positions, no dropout).
        clips: (B, T, 3, H, W), or ``load_step(active, step)`` returning only the active videos'
            frames of one step (then ``batch_size`` and ``num_steps`` are required), so that
            frames of exited videos are never decoded.
        threshold: exit when max softmax >= threshold; None: never before the last step.
        policy: one of :data:`POLICIES`.
        generator: the draws of ``sample`` and ``random``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    model.eval()
    if isinstance(clips, torch.Tensor):
        model.check_clips(clips)
        video = clips
        batch_size, num_steps = clips.shape[0], num_steps or clips.shape[1]
        load_step: StepLoader = lambda active, step: video[list(active), step]  # noqa: E731
    else:
        if batch_size is None or num_steps is None:
            raise ValueError("a step loader needs batch_size and num_steps")
        load_step = clips
    device = next(model.parameters()).device
    policy_h = torch.zeros(batch_size, model.policy.hidden, device=device)
    classifier_h = torch.zeros(batch_size, model.classifier.gru.hidden_size, device=device)
    exit_step = torch.full((batch_size,), -1, dtype=torch.long)
    logits_out = torch.zeros(batch_size, model.num_classes)
    top_left = torch.full((batch_size, num_steps, 2), -1, dtype=torch.long)
    actions = torch.full((batch_size, num_steps), -1, dtype=torch.long)
    step_logits = torch.full((batch_size, num_steps, model.num_classes), float("nan"))
    active = torch.arange(batch_size)
    for step in range(num_steps):
        frames = load_step(active.tolist(), step).to(device)
        idx = active.to(device)
        maps, pooled = model.glance_frames(frames)
        if policy == "random":
            hw = tuple(frames.shape[-2:])
            corners = random_top_left(len(active), hw, model.patch_size, generator=generator).to(device)
        else:
            chosen = model.policy.act(maps, policy_h[idx], sample=policy == "sample", generator=generator)
            corners = model.actions_to_top_left(chosen.action, tuple(frames.shape[-2:]))
            policy_h[idx] = chosen.hidden
            actions[active, step] = chosen.action.cpu()
        local = model.focus_patches(frames, corners)
        logits, classifier_h[idx] = model.classifier.step(torch.cat([pooled, local], 1), classifier_h[idx])
        top_left[active, step] = corners.cpu()
        step_logits[active, step] = logits.float().cpu()
        if step == num_steps - 1:
            leaving = torch.ones(len(active), dtype=torch.bool)
        elif threshold is None:
            leaving = torch.zeros(len(active), dtype=torch.bool)
        else:
            leaving = (torch.softmax(logits.float(), 1).amax(1) >= threshold).cpu()
        gone = active[leaving]
        exit_step[gone] = step
        logits_out[gone] = logits[leaving.to(device)].float().cpu()
        active = active[~leaving]
        if len(active) == 0:
            break
    return ExitResult(exit_step, logits_out, top_left, actions, step_logits)
