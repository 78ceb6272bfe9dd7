"""Dynamic inference: each frame runs only at the precision the policy chose.

The original's evaluation ran every bit width on every frame and then selected features with the
one-hot decision, so nothing was saved. Here the frames of a batch are grouped by decision: one
backbone pass per bit width present (on just those frames), nothing for skipped frames::

    clip (B, T, 3, H, W) --policy--> actions (B, T)
      frames with action "32 bits" --backbone@32--> features  \\
      frames with action "4 bits"  --backbone@4 --> features   }-- mean over kept frames --> fc --> (B, K)
      skipped frames: no backbone                              /

A quirk of the original's quantisers carries over: PACT rescales by a per-tensor mean, so a
frame's features can differ in the last bits with the batch it runs in (its 1-ulp differences
can move a low-bit activation to the next level).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from videoiq.model import VideoIQ

__all__ = ["DynamicResult", "dynamic_inference"]


@dataclass
class DynamicResult:
    actions: torch.Tensor  # (B, T) int64: index into [bit widths..., skip options...]
    bits: torch.Tensor  # (B, T) int64: the bit width each frame ran at (float: 32), 0 if skipped
    logits: torch.Tensor  # (B, K) video logits
    probs: torch.Tensor  # (B, K) softmax of the logits

    @property
    def kept(self) -> torch.Tensor:
        """(B, T) bool: frames that went through the backbone."""
        return self.bits > 0


@torch.no_grad()
def dynamic_inference(
    model: VideoIQ,
    clip: torch.Tensor,
    *,
    sample: bool = False,
    int8: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> DynamicResult:
    """Run VideoIQ on ``clip`` (B, T, 3, H, W), each frame only at its chosen bit width.

    ``sample=True`` draws the policy's decisions (Gumbel, at the current temperature), as the
    original's evaluation did without ``--deterministic``; the default takes the argmax.
    ``int8``: bit width -> a network that maps frames (N, 3, H, W) to features (N, F) in its place
    (:class:`videoiq.int8.Int8Branch`, PyTorch's int8 CPU kernels); the other bit widths run on
    the fake-quantised float path.
    """
    int8 = dict(int8 or {})
    unknown = sorted(set(int8) - set(model.family))
    if unknown:
        raise ValueError(f"int8 branches for bit widths {unknown} that are not in the family {model.family}")
    if any(m.training for m in model.modules()):  # a walk; eval() costs about 4x as much
        model.eval()
    b, t = clip.shape[:2]
    precisions = model.precisions
    actions = model.policy(clip, sample=sample).decisions.argmax(dim=-1)
    flat = actions.flatten()
    frames = clip.flatten(0, 1)
    feats = frames.new_zeros(b * t, model.recognizer.num_features)
    try:
        for i, precision in enumerate(precisions):
            idx = (flat == i).nonzero().flatten()
            if idx.numel():
                whole = idx.numel() == flat.numel()  # one group: no gather, no scatter
                group = frames if whole else frames.index_select(0, idx)
                run = int8.get(precision) if isinstance(precision, int) else None
                out = run(group) if run is not None else model.precision_features(group, precision)
                if whole:
                    feats = out.to(feats.dtype)
                else:
                    feats[idx] = out.to(feats.dtype)
    finally:
        model.recognizer.set_bit_width(model.family[0])
    kept = actions < len(precisions)
    # fc of the mean kept feature = the original's mean over T of fc(feature * T / #kept)
    mean = feats.view(b, t, -1).sum(dim=1) / kept.sum(dim=1).clamp(min=1)[:, None]
    logits = model.recognizer.fc(mean)
    table = torch.tensor([*model.precision_bits, *[0] * len(model.skip_list)], device=actions.device)
    return DynamicResult(actions, table[actions], logits, torch.softmax(logits, dim=1))
