"""Batched inference with AdaFocus+: frame skipping and early exit, both training-free.

The original released no AdaFocus+ code. The paper's AdaFocus+ skips "less valuable frames"
(temporal redundancy); its successors also exit once the classifier is confident. Here a batch of
videos advances step by step over an active set. At each step every active video is glanced; then

* **skip** (``skip_similarity``): a frame whose glance feature map is nearly the same as that of
  the last frame the video focused on (cosine similarity of the flattened maps >=
  ``skip_similarity``) brings nothing the classifier has not seen. Only the glance runs for it:
  no policy step, no patch, no focus network, no classifier step, so the prediction and both
  recurrent states carry over unchanged. The first frame is never skipped. The glance map holds
  where things are as well as what they are, so an object that moved makes the maps differ;
* **exit** (``threshold``): a video leaves the set once its prediction's top softmax probability
  reaches ``threshold`` (or at the last step).

The frames that are not skipped get a position from the policy, a patch, the focus network and a
classifier step. Without either option every video runs all T steps and the result equals the
batched :meth:`~adafocus.model.AdaFocus.forward`, which is faster (one glance and one focus pass):
given whole clips and argmax positions, :func:`early_exit` runs that instead of stepping. The cost of a video is counted per unit (:func:`~adafocus.cost.video_macs`): the glance
for every step reached, the other units for the focused steps only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from adafocus.crop import crop_patches, random_top_left
from adafocus.model import AdaFocus
from effvid.data.streaming import StepLoader
from effvid.models.optimize import FastInferenceConfig, optimize_for_inference

__all__ = ["POLICIES", "ExitResult", "early_exit", "inference_copy"]

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
    skipped: torch.Tensor  # (B, T) bool: glanced, judged redundant, not focused (False when not run)

    @property
    def steps_used(self) -> torch.Tensor:
        """(B,) steps reached (each glanced once)."""
        return self.exit_step + 1

    @property
    def focused_steps(self) -> torch.Tensor:
        """(B,) steps that ran the policy, the focus network and the classifier."""
        return self.steps_used - self.skipped.sum(1)

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
    skip_similarity: float | None = None,
    policy: str = "argmax",
    generator: torch.Generator | None = None,
) -> ExitResult:
    """Run AdaFocus step by step on a batch, skipping redundant frames and dropping videos once
    they are confident.

    Args:
        model: an :class:`AdaFocus` (run in eval mode: argmax positions, no dropout).
        clips: (B, T, 3, H, W), or ``load_step(active, step)`` returning only the active videos'
            frames of one step (then ``batch_size`` and ``num_steps`` are required), so that
            frames of exited videos are never decoded.
        threshold: exit when max softmax >= threshold; None: never before the last step.
        skip_similarity: skip a frame whose glance map has a cosine similarity >= this with the
            map of the video's last focused frame; None: focus on every frame reached.
        policy: one of :data:`POLICIES`.
        generator: the draws of ``sample`` and ``random``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    if skip_similarity is not None and not -1.0 <= skip_similarity <= 1.0:
        raise ValueError(f"skip_similarity is a cosine similarity in [-1, 1]; got {skip_similarity}")
    model.eval()
    if (
        isinstance(clips, torch.Tensor)
        and threshold is None
        and skip_similarity is None
        and policy == "argmax"
    ):
        return _all_steps(model, clips[:, :num_steps] if num_steps else clips)
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
    skipped = torch.zeros(batch_size, num_steps, dtype=torch.bool)
    last_logits = torch.zeros(batch_size, model.num_classes, device=device)
    seen = None  # (B, C*h*w) glance map of each video's last focused frame
    active = torch.arange(batch_size)
    for step in range(num_steps):
        frames = load_step(active.tolist(), step).to(device)
        idx = active.to(device)
        maps, pooled = model.glance_frames(frames)
        if skip_similarity is not None:
            flat = maps.flatten(1).float()
            if seen is None:
                seen = torch.zeros(batch_size, flat.shape[1], device=device)
            redundant = torch.zeros(len(active), dtype=torch.bool, device=device)
            if step > 0:
                redundant = torch.cosine_similarity(flat, seen[idx], dim=1) >= skip_similarity
            skipped[active, step] = redundant.cpu()
            run = ~redundant
            seen[idx[run]] = flat[run]
        else:
            run = torch.ones(len(active), dtype=torch.bool, device=device)
        state = (policy_h, classifier_h, top_left, actions)
        if bool(run.all()):
            logits = _focus_step(
                model, frames, maps, pooled, active, step, policy=policy, generator=generator, state=state
            )
        else:
            logits = last_logits[idx]  # a skipped frame leaves the prediction as it was
            if bool(run.any()):
                r = run.cpu()
                logits[run] = _focus_step(
                    model,
                    frames[run],
                    maps[run],
                    pooled[run],
                    active[r],
                    step,
                    policy=policy,
                    generator=generator,
                    state=state,
                ).to(logits.dtype)
        last_logits[idx] = logits.float()
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
    return ExitResult(exit_step, logits_out, top_left, actions, step_logits, skipped)


def _all_steps(model: AdaFocus, clips: torch.Tensor) -> ExitResult:
    """Every video runs every step with argmax positions: the batched forward (one glance pass and
    one focus pass over all frames, the policy over the whole clip), the same result as stepping."""
    out = model(clips, sample=False)
    b, t = clips.shape[:2]
    return ExitResult(
        exit_step=torch.full((b,), t - 1, dtype=torch.long),
        logits=out.video_logits.float().cpu(),
        top_left=out.top_left.long().cpu(),
        actions=out.actions.long().cpu(),  # type: ignore[union-attr]
        step_logits=out.logits.float().cpu(),
        skipped=torch.zeros(b, t, dtype=torch.bool),
    )


def _focus_step(
    model: AdaFocus,
    frames: torch.Tensor,
    maps: torch.Tensor,
    pooled: torch.Tensor,
    videos: torch.Tensor,
    step: int,
    *,
    policy: str,
    generator: torch.Generator | None,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Policy, patch, focus and classifier step for ``videos`` (N,) of the batch at ``step``:
    frames (N, 3, H, W), their glance maps and pooled features -> logits (N, K). Updates the
    recurrent states and the corner/action records in ``state`` in place."""
    policy_h, classifier_h, top_left, actions = state
    idx = videos.to(frames.device)
    if policy == "random":
        hw = tuple(frames.shape[-2:])
        corners = random_top_left(len(videos), hw, model.patch_size, generator=generator).to(frames.device)
    else:
        chosen = model.policy.act(maps, policy_h[idx], sample=policy == "sample", generator=generator)
        corners = model.actions_to_top_left(chosen.action, tuple(frames.shape[-2:]))
        policy_h[idx] = chosen.hidden
        actions[videos, step] = chosen.action.cpu()
    local = model.focus_patches(frames, corners)
    logits, classifier_h[idx] = model.classifier.step(torch.cat([pooled, local], 1), classifier_h[idx])
    top_left[videos, step] = corners.cpu()
    return logits


class _Method(nn.Module):
    """``module.<name>(x)`` as a module's forward, so that torch.fx traces it (a backbone's
    ``forward_feature_maps`` / ``forward_features``, which are not its ``forward``)."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.name)(x)


class _FastAdaFocus(AdaFocus):
    """An AdaFocus whose glance and focus networks run as optimised copies (``glance_net``:
    frames -> glance maps, ``focus_net``: patches -> focus features); made by :func:`inference_copy`."""

    glance_net: nn.Module
    focus_net: nn.Module

    def glance_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.glance_net(self.glance_input(frames)).contiguous()
        return maps, maps.mean(dim=(2, 3))

    def focus_patches(self, frames: torch.Tensor, top_left: torch.Tensor) -> torch.Tensor:
        return self.focus_net(crop_patches(frames, top_left, self.patch_size))


def inference_copy(model: AdaFocus, fast: FastInferenceConfig, *, device: torch.device) -> AdaFocus:
    """An inference-only copy of ``model`` on ``device`` whose glance and focus networks are
    optimised by the core (:func:`effvid.models.optimize.optimize_for_inference`: BatchNorm folded,
    channels-last, or compiled); the policy and the classifier are unchanged. The outputs equal the
    model's up to float rounding. int8 is not offered here: its accuracy cost on AdaFocus is not
    measured."""
    if fast.int8:
        raise ValueError("adafocus: --fast.int8 is not supported (fold_bn, channels_last and compile are)")
    out = copy.deepcopy(model).eval().to(device)
    for p in out.parameters():
        p.requires_grad_(False)
    glance = optimize_for_inference(_Method(out.glance, "forward_feature_maps"), fast, device=device)
    focus = optimize_for_inference(_Method(out.focus, "forward_features"), fast, device=device)
    out.__class__ = _FastAdaFocus
    out.glance_net, out.focus_net = glance, focus
    return out
