"""VideoIQ's precision policy: for every frame, a bit width or a skip.

::

    frame t (3, H, W) --bilinear 84x84--> MobileNetV2 --> avg pool --> dropout (0.8) --> (1280,)
        --> LSTMCell(1280, 512) --> h_t --> Linear(512, #bits + #skips) --> log-softmax p_t
        --> r_t = one-hot: hard Gumbel-softmax(p_t, temperature) in training, argmax at evaluation
    optional head: Linear(512, K) on the mean of h_t over T

Stage 3 of the pipeline pretrains the same MobileNetV2 (same modules and names) as a frame
classifier at the policy's input size (:class:`PolicyBackboneClassifier`), so that its weights
load into the policy as they are (the original trained another MobileNetV2 at 224x224, whose keys
did not fit its policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effvid.models import get_backbone, replace_modules
from videoiq.quant import QConv2d

__all__ = [
    "POLICY_BACKBONES",
    "PolicyBackboneClassifier",
    "PolicyOutput",
    "PrecisionPolicy",
    "policy_backbone",
]


POLICY_BACKBONES = ("mobilenet_v2", "tiny_cnn")


def policy_backbone(arch: str = "mobilenet_v2", width: float = 1.0) -> nn.Module:
    """The policy's frame network from the effvid registry: the original's MobileNetV2 (``width``
    is torchvision's ``width_mult``; first and last convs DoReFa-normalised at 32 bits, as in the
    original), or ``tiny_cnn`` (``16 * width`` channels), which trains in minutes on a CPU."""
    if arch == "tiny_cnn":
        return get_backbone("tiny_cnn", width=max(1, round(16 * width)))
    if arch != "mobilenet_v2":
        raise ValueError(f"the policy's backbone is one of {', '.join(POLICY_BACKBONES)}, got '{arch}'")
    backbone = get_backbone("mobilenet_v2", width_mult=width)
    last = f"features.{len(backbone.features) - 1}.0"
    replace_modules(backbone, ["features.0.0", last], lambda _n, conv: QConv2d.from_conv(conv, (32,)))
    return backbone


def small_frames(clip: torch.Tensor, size: int) -> torch.Tensor:
    """clip (B, T, 3, H, W) -> frames (B*T, 3, size, size), bilinear; resized as one (B, T*3, H, W)
    image like the original (per-frame batches round differently)."""
    b, t, c = clip.shape[:3]
    if tuple(clip.shape[3:]) == (size, size):  # bilinear at scale 1 returns its input: skip the copy
        return clip.flatten(0, 1)
    return F.interpolate(clip.flatten(1, 2), size=[size, size], mode="bilinear").view(b * t, c, size, size)


def _pooled(backbone: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(backbone.forward_feature_maps(frames), 1).flatten(1)  # as the original


@dataclass
class PolicyOutput:
    decisions: torch.Tensor  # (B, T, A) one-hot over [bit widths..., skips...], forced skips included
    log_probs: torch.Tensor  # (B, T, A) log-softmax (clamped at log 1e-8), forced frames copy theirs
    class_logits: torch.Tensor | None  # (B, K) from the policy head, or None


class PrecisionPolicy(nn.Module):
    """Per-frame choice of a bit width or a skip (``policynet.MobileNetV2`` of the original).

    MobileNetV2 (effvid registry; its first and last convs DoReFa-normalised at 32 bits, as in
    the original; or another :func:`policy_backbone`) on each frame resized to ``input_size``, average pool, dropout, an LSTMCell
    unrolled over time, ``Linear(hidden, #bits + #skips)``. A skip option ``s`` skips ``s``
    frames, the current one included: the frames it forces copy the hidden state, decision and
    log-probabilities of the frame that chose it (the LSTM cell state still advances).

    Args:
        num_bits: how many bit widths it chooses among (the first columns of a decision).
        skip_list: frames skipped by each skip option (``(1,)``; ``()``: no skip).
        num_classes: size of the optional classification head on the mean hidden state.
        hidden, dropout, input_size, temperature: 512, 0.8, 84, 5.0 in the original.
        backbone, width: the frame network (:func:`policy_backbone`; the original's is MobileNetV2
            of width 1.0).
    """

    def __init__(
        self,
        *,
        num_bits: int,
        skip_list: Sequence[int] = (1,),
        num_classes: int | None = None,
        hidden: int = 512,
        dropout: float = 0.8,
        input_size: int = 84,
        temperature: float = 5.0,
        backbone: str = "mobilenet_v2",
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if any(int(s) < 1 for s in skip_list):
            raise ValueError(f"skip options skip at least one frame, got {tuple(skip_list)}")
        self.num_bits, self.skip_list, self.input_size = (
            num_bits,
            tuple(int(s) for s in skip_list),
            input_size,
        )
        self.arch, self.width = backbone, width
        self.backbone = policy_backbone(backbone, width)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTMCell(self.backbone.num_features, hidden)
        self.linear = nn.Linear(hidden, num_bits + len(self.skip_list))
        self.fc = nn.Linear(hidden, num_classes) if num_classes else None
        self.register_buffer("temperature", torch.full((1,), float(temperature)))
        for m in (self.linear, self.fc):  # near-uniform initial policy, as in the original
            if m is not None:
                nn.init.normal_(m.weight, 0.0, 0.001)
                nn.init.zeros_(m.bias)

    @property
    def num_actions(self) -> int:
        return self.num_bits + len(self.skip_list)

    def decay_temperature(self, rate: float = 0.956) -> float:
        """Multiply the Gumbel temperature by ``rate`` (the original does it after every epoch)."""
        self.temperature.mul_(rate)
        return float(self.temperature)

    def frame_features(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, T, 3, H, W) -> dropped-out MobileNetV2 features (B, T, 1280)."""
        pooled = _pooled(self.backbone, small_frames(clip, self.input_size))
        return self.dropout(pooled).view(*clip.shape[:2], -1)

    def forward(self, clip: torch.Tensor, *, sample: bool | None = None) -> PolicyOutput:
        """clip (B, T, 3, H, W) -> :class:`PolicyOutput`.

        ``sample`` (default: ``self.training``) draws hard Gumbel-softmax decisions at the current
        temperature (straight-through gradients); otherwise the decision is the argmax.
        """
        sample = self.training if sample is None else sample
        feats = self.frame_features(clip)
        b, t = feats.shape[:2]
        hx = feats.new_zeros(b, self.rnn.hidden_size)
        cx = feats.new_zeros(b, self.rnn.hidden_size)
        remain = torch.zeros(b, dtype=torch.long, device=feats.device)  # frames still to skip
        skips = torch.tensor(self.skip_list, dtype=torch.long, device=feats.device)
        decisions, log_probs, hiddens = [], [], []
        for step in range(t):
            hx_prev = hx  # the state a forced frame keeps (the cell state cx still advances)
            hx, cx = self.rnn(feats[:, step], (hx, cx))
            hiddens.append(hx)
            logp = torch.log(F.softmax(self.linear(hx), dim=1).clamp(min=1e-8))
            if sample:
                r = F.gumbel_softmax(logp, tau=self.temperature, hard=True)
            else:
                r = F.one_hot(logp.argmax(dim=1), self.num_actions).to(logp.dtype)
            if step > 0:
                forced = (remain > 0)[:, None]
                hx = torch.where(forced, hx_prev, hx)
                r = torch.where(forced, decisions[-1], r)
                logp = torch.where(forced, log_probs[-1], logp)
            if len(skips):
                chosen = r[:, self.num_bits :] > 0.5
                start = (remain == 0) & chosen.any(dim=1)
                remain = torch.where(start, (chosen.long() * skips).sum(dim=1), remain)
            decisions.append(r)
            log_probs.append(logp)
            remain = (remain - 1).clamp(min=0)
        class_logits = self.fc(torch.stack(hiddens, dim=1).mean(dim=1)) if self.fc is not None else None
        return PolicyOutput(torch.stack(decisions, dim=1), torch.stack(log_probs, dim=1), class_logits)


class PolicyBackboneClassifier(nn.Module):
    """Stage 3: the policy's MobileNetV2 trained as a frame classifier at the policy's input size.

    ::

        clip (B, T, 3, H, W) --bilinear input_size--> MobileNetV2 --> avg pool --> dropout --> fc
            --> per-frame logits, mean over T --> (B, K)

    ``backbone`` has the policy's modules and names: its state loads into ``policy.backbone``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int = 84,
        backbone: str = "mobilenet_v2",
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.backbone = policy_backbone(backbone, width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.dropout(_pooled(self.backbone, small_frames(clip, self.input_size))))
        return logits.view(*clip.shape[:2], -1).mean(dim=1)
