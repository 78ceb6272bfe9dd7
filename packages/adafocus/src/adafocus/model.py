"""The AdaFocus network (implementation A of the paper: ActivityNet, FCVID, Mini-Kinetics).

::

    clip (B, T, 3, H, W)
      --resize to glance_size (nearest, as the original)--> glance, all B*T frames in one pass
          --> maps m (B, T, C_g, h, w), pooled g (B, T, C_g)
      policy over t = 0..T-1 (recurrent; its state never depends on the positions): m_t -> grid position a_t
      crop a P x P patch at a_t from the full-resolution frame, all B*T patches in one pass
          --focus--> l (B, T, C_f)
      classifier: GRU over [g_t, l_t] (B, T, C_g + C_f) -> dropout -> Linear -> logits at every step

The video prediction is the last step's logits (``logits[:, -1]``); the training loss averages the
cross-entropy over all steps. Both backbones carry their own linear head for stage-0 pre-training
(unused here); the policy has no ``policy_old`` copy (PPO's old log-probabilities are stored in the
rollout instead).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adafocus.crop import action_positions, crop_patches, top_left_from_positions
from adafocus.policy import PatchPolicy
from effvid.models import Backbone, get_backbone

__all__ = ["AdaFocus", "AdaFocusOutput", "RecurrentClassifier"]


class RecurrentClassifier(nn.Module):
    """GRU over per-frame features, a prediction at every step.

    ``features (B, T, F) --GRU(F -> D)--> (B, T, D) --dropout--> Linear(D -> K) --> logits (B, T, K)``
    """

    def __init__(
        self, in_features: int, num_classes: int, *, hidden: int = 1024, dropout: float = 0.8
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(in_features, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(
        self, features: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), hidden (B, D) or None (zeros) -> (logits (B, T, K), last hidden (B, D))."""
        out, h_n = self.gru(features, None if hidden is None else hidden[None])
        return self.fc(self.dropout(out)), h_n[0]

    def step(self, feature: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: (B, F), (B, D) or None -> (logits (B, K), new hidden (B, D))."""
        logits, h = self(feature[:, None], hidden)
        return logits[:, 0], h


@dataclass
class AdaFocusOutput:
    logits: torch.Tensor  # (B, T, K) the classifier's prediction after each step
    top_left: torch.Tensor  # (B, T, 2) int64 (row, column) of each patch
    actions: torch.Tensor | None  # (B, T) grid indices chosen by the policy (None: patches given)
    log_probs: torch.Tensor | None  # (B, T) log pi(action)
    glance_maps: torch.Tensor  # (B, T, C_g, h, w) the policy's states
    features: torch.Tensor  # (B, T, C_g + C_f) the classifier's inputs [glance pooled, focus]

    @property
    def video_logits(self) -> torch.Tensor:
        """(B, K): the last step's prediction (the original's ``last_out``)."""
        return self.logits[:, -1]


def _build(backbone: str | nn.Module, num_classes: int | None, kwargs: dict | None) -> nn.Module:
    if isinstance(backbone, str):
        return get_backbone(backbone, num_classes=num_classes, **(kwargs or {}))
    if kwargs:
        raise ValueError("backbone keyword arguments apply only to a backbone given by name")
    return backbone


def _map_shape(backbone: nn.Module, size: int) -> tuple[int, int, int]:
    """(C, h, w) of the backbone's last map at size x size, on the meta device (nothing computed)."""
    meta = copy.deepcopy(backbone).to("meta").eval()  # eval: BatchNorm takes a 1x1 map
    with torch.no_grad():
        out = meta.forward_feature_maps(torch.empty(1, 3, size, size, device="meta"))
    return tuple(out.shape[1:])


class AdaFocus(nn.Module):
    """Glance + patch policy + focus + recurrent classifier.

    Args:
        num_classes: K.
        glance: registry name or a built :class:`~effvid.models.Backbone` (MobileNetV2 by default).
        focus: registry name or a built backbone (ResNet-50 by default).
        patch_size: P, the side of the square patch cut from the full-resolution frame.
        grid: n, candidate positions per side (n*n actions; 7 in the paper).
        glance_size: the square size frames are resized to for the glance (224 in the paper, which
            is the full frame). It fixes the glance map size the policy is built for.
        glance_mode: ``F.interpolate`` mode of that resize (the original's default, ``nearest``).
        policy_hidden: the policy's encoder and GRU width.
        classifier_hidden: the classifier GRU width.
        dropout: between the classifier GRU and its Linear (0.8 in the paper's commands).
        backbone_heads: give name-built backbones a K-way head (for stage-0 pre-training and the
            authors' checkpoints, which contain them).
        glance_kwargs / focus_kwargs: extra builder arguments (e.g. ``{"width": 8}`` for tiny_cnn).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        glance: str | nn.Module = "mobilenet_v2",
        focus: str | nn.Module = "resnet50",
        patch_size: int = 128,
        grid: int = 7,
        glance_size: int = 224,
        glance_mode: str = "nearest",
        policy_hidden: int = 1024,
        classifier_hidden: int = 1024,
        dropout: float = 0.8,
        backbone_heads: bool = True,
        glance_kwargs: dict | None = None,
        focus_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.patch_size, self.grid = num_classes, patch_size, grid
        self.glance_size, self.glance_mode = glance_size, glance_mode
        heads = num_classes if backbone_heads else None
        self.glance: Backbone = _build(glance, heads, glance_kwargs)
        self.focus: Backbone = _build(focus, heads, focus_kwargs)
        channels, h, w = _map_shape(self.glance, glance_size)
        self.policy = PatchPolicy(channels, (h, w), grid=grid, hidden=policy_hidden)
        self.classifier = RecurrentClassifier(
            self.glance.num_features + self.focus.num_features,
            num_classes,
            hidden=classifier_hidden,
            dropout=dropout,
        )

    # -- the parts ---------------------------------------------------------------------------

    def glance_input(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, g, g) (unchanged when already g x g)."""
        if tuple(frames.shape[-2:]) == (self.glance_size, self.glance_size):
            return frames
        return F.interpolate(frames, size=(self.glance_size, self.glance_size), mode=self.glance_mode)

    def glance_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (maps (N, C_g, h, w), pooled (N, C_g))."""
        maps = self.glance.forward_feature_maps(self.glance_input(frames))
        return maps, maps.mean(dim=(2, 3))

    def focus_patches(self, frames: torch.Tensor, top_left: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W), (N, 2) -> focus features of the P x P patches (N, C_f)."""
        return self.focus.forward_features(crop_patches(frames, top_left, self.patch_size))

    def actions_to_top_left(self, actions: torch.Tensor, frame_hw: tuple[int, int]) -> torch.Tensor:
        """Grid indices (...) -> top-left corners (..., 2) in a frame of size ``frame_hw``."""
        positions = action_positions(actions, self.grid)
        return top_left_from_positions(positions.reshape(-1, 2), frame_hw, self.patch_size).view(
            *actions.shape, 2
        )

    def choose(
        self,
        maps: torch.Tensor,
        *,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy over a clip's glance maps (B, T, C, h, w) -> actions (B, T), log pi (B, T).

        Taking the argmax, the policy runs over the whole clip at once: its state depends on the
        maps and its own hidden state, never on the positions chosen, so the encoder and the actor
        run over all B*T maps in one call each and the GRU over the T steps in one call (one
        Python step per frame cost a fifth of the batched forward's time in the benchmark).
        Sampling stays step by step, drawing as :meth:`PatchPolicy.act` does.
        """
        if not (self.policy.training if sample is None else sample):
            b, t = maps.shape[:2]
            encoded = self.policy.encode(maps.detach().transpose(0, 1).flatten(0, 1)).view(t, b, -1)
            out, _ = self.policy.gru(encoded)
            log_probs = F.log_softmax(self.policy.actor(out), dim=-1)  # (T, B, n*n)
            actions = log_probs.argmax(dim=-1)
            return actions.t(), log_probs.gather(-1, actions[..., None])[..., 0].t()
        hidden, acts, lps = None, [], []
        for step in range(maps.shape[1]):
            # detached: the policy learns by RL or through the crop, never through the glance
            chosen = self.policy.act(maps[:, step].detach(), hidden, sample=sample, generator=generator)
            hidden = chosen.hidden
            acts.append(chosen.action)
            lps.append(chosen.log_prob)
        return torch.stack(acts, 1), torch.stack(lps, 1)

    def check_clips(self, clips: torch.Tensor) -> None:
        """Raise a readable error unless ``clips`` is (B, T, 3, H, W) with frames that hold a patch."""
        if clips.dim() != 5 or clips.shape[2] != 3:
            raise ValueError(f"clips must be (B, T, 3, H, W), got {tuple(clips.shape)}")
        h, w = clips.shape[-2:]
        if self.patch_size > min(h, w):
            raise ValueError(
                f"a {self.patch_size}x{self.patch_size} patch does not fit in {h}x{w} frames; "
                "use frames at least as large as the patch"
            )

    # -- batched forward ---------------------------------------------------------------------

    def forward(
        self,
        clips: torch.Tensor,
        *,
        top_left: torch.Tensor | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> AdaFocusOutput:
        """Batched: glance over all B*T frames, policy step by step, focus over all B*T patches.

        Args:
            clips: (B, T, 3, H, W).
            top_left: (B, T, 2) given patch corners (e.g. random patches in stage 1); the policy
                is then not run.
            sample: sample positions (default: in training mode) rather than take the argmax.
        """
        self.check_clips(clips)
        b, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        maps, pooled = self.glance_frames(frames)
        maps = maps.view(b, t, *maps.shape[1:])
        actions = log_probs = None
        if top_left is None:
            actions, log_probs = self.choose(maps, sample=sample, generator=generator)
            top_left = self.actions_to_top_left(actions, tuple(clips.shape[-2:]))
        local = self.focus_patches(frames, top_left.reshape(b * t, 2))
        features = torch.cat([pooled, local], dim=1).view(b, t, -1)
        logits, _ = self.classifier(features)
        return AdaFocusOutput(logits, top_left, actions, log_probs, maps, features)

    # -- the original's order of work, one frame at a time ---------------------------------

    @torch.no_grad()
    def forward_frame_by_frame(self, clips: torch.Tensor) -> AdaFocusOutput:
        """Reference path (evaluation, argmax): per frame glance, policy, crop, focus, classifier step."""
        self.check_clips(clips)
        b, t = clips.shape[:2]
        policy_h = classifier_h = None
        logits, corners, acts, lps, all_maps, features = [], [], [], [], [], []
        for step in range(t):
            frame = clips[:, step]
            maps, pooled = self.glance_frames(frame)
            chosen = self.policy.act(maps, policy_h, sample=False)
            policy_h = chosen.hidden
            tl = self.actions_to_top_left(chosen.action, tuple(frame.shape[-2:]))
            local = self.focus_patches(frame, tl)
            feature = torch.cat([pooled, local], 1)
            step_logits, classifier_h = self.classifier.step(feature, classifier_h)
            features.append(feature)
            logits.append(step_logits)
            corners.append(tl)
            acts.append(chosen.action)
            lps.append(chosen.log_prob)
            all_maps.append(maps)
        return AdaFocusOutput(
            torch.stack(logits, 1),
            torch.stack(corners, 1),
            torch.stack(acts, 1),
            torch.stack(lps, 1),
            torch.stack(all_maps, 1),
            torch.stack(features, 1),
        )
