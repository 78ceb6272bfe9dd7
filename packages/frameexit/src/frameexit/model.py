"""The FrameExit network.

::

    frame x_t (N, 3, H, W) --backbone--> (N, F) --mlp: Linear, BN, ReLU--> h_t (N, D)
    z_t = max(h_t, z_{t-1})                     running element-wise max over processed frames
    step 0:      exit if max softmax(classifier_0(z_0)) > first_threshold
    step t>=1:   exit if sigmoid(gate_{t-1}(z_t, z_{t-1})) > gate_threshold; classify with classifier_t
    step T-1:    always exit

The gate outputs the probability of exiting (the paper's convention). The authors' checkpoints
use the opposite polarity (1 = continue); :mod:`frameexit.conversion` negates their last layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from effvid.models import Backbone, get_backbone

__all__ = ["ExitGate", "FrameExitModel"]


class ExitGate(nn.Module):
    """g(z_t, z_{t-1}) -> exit logit (N,).

    A shared 2-layer MLP ``D -> 128 -> 64`` (Linear, BN, ReLU each; the original wrote them as
    1x1 convolutions) is applied to ``z_t`` and to ``z_{t-1}`` separately; the two 64-d outputs,
    concatenated ``[f(z_t), f(z_{t-1})]``, go through ``Linear(128, 1)``.
    """

    def __init__(self, in_features: int, hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.bn1 = nn.BatchNorm1d(hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.bn2 = nn.BatchNorm1d(hidden[1])
        self.linear = nn.Linear(2 * hidden[1], 1)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(z))))))

    def forward(self, z_t: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """(N, D), (N, D) -> exit logits (N,)."""
        return self.linear(torch.cat([self.embed(z_t), self.embed(z_prev)], dim=1)).squeeze(1)


class FrameExitModel(nn.Module):
    """Backbone + per-frame MLP + running max + one classifier per step + T-1 exit gates.

    Args:
        backbone: a built :class:`~effvid.models.Backbone`, or a name in the effvid registry
            (``resnet50`` for the authors' checkpoints).
        num_classes: classifier outputs.
        num_frames: T, the most frames a video can use.
        hidden: D, the per-frame MLP width (4096 in the paper).
        first_threshold: step-0 confidence needed to exit (strictly greater).
        gate_threshold: exit probability a gate needs to stop (strictly greater).
        backbone_kwargs: extra builder arguments for a named backbone (``{"width": 16}`` for ``tiny_cnn``).
    """

    def __init__(
        self,
        *,
        backbone: str | Backbone = "resnet50",
        num_classes: int,
        num_frames: int = 10,
        hidden: int = 4096,
        first_threshold: float = 0.99,
        gate_threshold: float = 0.5,
        backbone_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"FrameExit needs num_frames >= 2, got {num_frames}")
        self.num_frames, self.num_classes, self.hidden = num_frames, num_classes, hidden
        self.first_threshold, self.gate_threshold = first_threshold, gate_threshold
        if isinstance(backbone, str):
            backbone = get_backbone(backbone, **(backbone_kwargs or {}))
        elif backbone_kwargs:
            raise ValueError("backbone_kwargs apply to a backbone given by name, not to a built one")
        self.backbone = backbone
        self.mlp = nn.Sequential(
            nn.Linear(self.backbone.num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU()
        )
        self.classifiers = nn.ModuleList(nn.Linear(hidden, num_classes) for _ in range(num_frames))
        # the gate of the last step is never consulted (the last step always exits); it is kept
        # so that checkpoints of the original (9 gates for 10 frames) load strictly
        self.gates = nn.ModuleList(ExitGate(hidden) for _ in range(num_frames - 1))

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> per-frame features h (N, D)."""
        return self.mlp(self.backbone.forward_features(frames))

    def step_logits(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step's classifier on the running max: video (B, T, 3, H, W) in processing order ->
        logits (B, T, K) and pooled features z (B, T, D)."""
        b, t = video.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames per video, got {t}")
        h = self.frame_features(video.flatten(0, 1)).view(b, t, -1)
        z = torch.cummax(h, dim=1).values
        return torch.stack([self.classifiers[s](z[:, s]) for s in range(t)], dim=1), z

    def gate_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, T, D) -> exit logits (B, T-1) of the gates of steps 1..T-1."""
        return torch.stack([self.gates[s - 1](z[:, s], z[:, s - 1]) for s in range(1, z.shape[1])], dim=1)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All steps at once: step logits (B, T, K), gate logits (B, T-1), pooled features (B, T, D)."""
        logits, z = self.step_logits(video)
        return logits, self.gate_logits(z), z

    def classify(self, z: torch.Tensor, step: int) -> torch.Tensor:
        return self.classifiers[step](z)

    def exit_score(
        self, z_t: torch.Tensor, z_prev: torch.Tensor | None, step: int, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the exit decision at ``step`` (< T-1) compares with its threshold, as a logit (N,)
        in float64: the gate's exit logit, or at step 0 the log-odds of the top class's
        probability. A video exits when this exceeds :meth:`threshold_logit`; the distance
        between the two is the decision's margin."""
        if step == 0:
            assert logits is not None
            log_p = torch.log_softmax(logits.double(), dim=1)
            top = log_p.argmax(dim=1, keepdim=True)
            rest = torch.logsumexp(log_p.scatter(1, top, float("-inf")), dim=1)  # log(1 - p_top)
            return log_p.gather(1, top).squeeze(1) - rest
        assert z_prev is not None
        return self.gates[step - 1](z_t, z_prev).double()

    def threshold_logit(self, step: int) -> float:
        """The threshold of the decision at ``step`` as a logit (+-inf for 1 and 0)."""
        p = self.first_threshold if step == 0 else self.gate_threshold
        return math.inf if p >= 1 else -math.inf if p <= 0 else math.log(p) - math.log1p(-p)

    def exit_decision(
        self, z_t: torch.Tensor, z_prev: torch.Tensor | None, step: int, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Boolean (N,) exit mask at ``step`` (``logits`` of classifier 0 are needed at step 0)."""
        if step == 0:
            assert logits is not None
            return torch.softmax(logits.float(), dim=1).amax(dim=1) > self.first_threshold
        if step == self.num_frames - 1:
            return torch.ones(z_t.shape[0], dtype=torch.bool, device=z_t.device)
        return torch.sigmoid(self.gates[step - 1](z_t, z_prev).float()) > self.gate_threshold
