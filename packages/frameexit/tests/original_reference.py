"""A re-creation of the ORIGINAL FrameExit inference model, for conversion tests only.

Written from the documented facts (module structure, key names, shapes, control flow) of
Qualcomm-AI-research/FrameExit's ``ConditionalFrameExitInferenceModel``: a torchvision ResNet as
``Sequential(children[:-1])``, ``mlp.layers`` = Linear/BN1d/ReLU, gates of 1x1 convolutions
(4096->128->64, BN2d, ReLU) applied to z_t and z_{t-1} and concatenated into ``linear`` with a hard
sigmoid threshold where **0 means exit**, step 0 exiting on max softmax > threshold, batch size 1.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class OriginalMLP(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


class OriginalGate(nn.Module):
    def __init__(self, in_planes: int) -> None:
        super().__init__()
        # declaration order matters for the state_dict order: conv1, conv2, bn1, bn2, linear
        self.conv1 = nn.Conv2d(in_planes, 128, 1)
        self.conv2 = nn.Conv2d(128, 64, 1)
        self.bn1 = nn.BatchNorm2d(128)
        self.bn2 = nn.BatchNorm2d(64)
        self.linear = nn.Linear(128, 1)

    def branch(self, x):
        return torch.flatten(torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))), 1)

    def forward(self, z_t, z_prev):
        out = self.linear(torch.cat([self.branch(z_t), self.branch(z_prev)], dim=1))
        return (torch.sigmoid(out) >= 0.5).float()  # 1 = continue, 0 = exit


class OriginalFrameExit(nn.Module):
    def __init__(
        self,
        backbone: str = "resnet50",
        num_class: int = 200,
        num_frames: int = 10,
        hidden: int = 4096,
        first_threshold: float = 0.99,
    ) -> None:
        super().__init__()
        net = getattr(torchvision.models, backbone)()
        self.backbone = nn.Sequential(*list(net.children())[:-1])
        self.mlp = OriginalMLP(net.fc.in_features, hidden)
        self.exit_selector = nn.ModuleList(OriginalGate(hidden) for _ in range(num_frames - 1))
        self.classifiers = nn.ModuleList(nn.Linear(hidden, num_class) for _ in range(num_frames))
        self.num_frames, self.first_threshold = num_frames, first_threshold

    def step(self, x, z_previous, t):
        """x (1, 1, 3, H, W) -> (logits or None, z or None), as the original's forward."""
        b = x.shape[0]
        z = self.mlp(torch.flatten(self.backbone(x.flatten(0, 1)), 1)).view(b, -1)
        if t > 0:
            z = torch.max(z, z_previous)
        if t == 0:
            logits = self.classifiers[0](z)
            exited = torch.softmax(logits, 1).max() > self.first_threshold
        elif t < self.num_frames - 1:
            exited = self.exit_selector[t - 1](z.view(b, -1, 1, 1), z_previous.view(b, -1, 1, 1))[0, 0] == 0
        else:
            exited = True
        if exited:
            return self.classifiers[t](z), None
        return None, z

    @torch.no_grad()
    def run_video(self, video):
        """video (T, 3, H, W) in processing order -> (exit step, probabilities)."""
        z = None
        for t in range(self.num_frames):
            logits, z = self.step(video[t][None, None], z, t)
            if logits is not None:
                return t, torch.softmax(logits, 1)[0]
        raise AssertionError("unreachable: the last step always exits")


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, so that nothing is an identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("running_mean"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (1.0 / max(t[0].numel(), 1)) ** 0.5)
    return model.eval()
