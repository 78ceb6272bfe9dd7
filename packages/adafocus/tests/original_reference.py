"""Test helpers: random weights that are never identities by accident, and a re-creation of the
original AdaFocus network for the converter tests."""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, then eval mode.

    He-scaled matrices and BN scales near 1 keep the signal alive through deep random nets, so
    that the policy's choices depend on the frames rather than on its biases.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var") or (t.dim() == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``module(*inputs)``, then eval mode.

    Random running statistics let activations of a deep random net (ResNet-50) grow to thousands,
    a regime where float32 rounding, not the code, decides the last digits; trained nets have
    statistics that match their activations, as this gives.
    """
    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics exactly
    module.train()
    module(*inputs)
    for norm in norms:
        norm.momentum = 0.1
    return module.eval()


@torch.no_grad()
def center_actor(policy: nn.Module, maps: torch.Tensor) -> None:
    """Make a random policy's choice depend on its input: shift the actor's bias so that the
    logits average zero over the hidden states these glance maps (B, T, C, h, w) produce.

    In a random net the hidden states of different frames share a large common part, which
    would otherwise pick the same position everywhere.
    """
    hidden, states = None, []
    for t in range(maps.shape[1]):
        _, hidden = policy.step(maps[:, t], hidden)
        states.append(hidden)
    mean = torch.cat(states).mean(0)
    policy.actor.bias.copy_(-policy.actor.weight @ mean)


# ---------------------------------------------------------------------------------------------
# A re-creation of the ORIGINAL AdaFocus network (blackfeather-wang/AdaFocus, implementation A),
# for conversion tests only. Written from its documented structure (module names, shapes, control
# flow), not from its code: GFV = glancer (torchvision MobileNetV2, head Dropout+Linear), focuser
# (torchvision ResNet, head fc, plus a PPO holding `policy` and `policy_old` ActorCritics whose
# actor ends in a Softmax), classifier (GRU batch_first + dropout + fc). Evaluation: frames
# resized to the glance size (nearest), the glance over all frames, then per frame the policy's
# argmax position on a row-major grid, a hard slice at floor(a * (H - P)) cut sample by sample,
# and one classifier GRU step.
# ---------------------------------------------------------------------------------------------


class OriginalGlancer(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = torchvision.models.mobilenet_v2()
        self.net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.net.last_channel, num_classes))

    def forward(self, x):
        maps = self.net.features(x)
        return maps, maps.mean([2, 3])


class OriginalActorCritic(nn.Module):
    def __init__(self, feature_dim: int, state_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.state_encoder = nn.Sequential(
            nn.Conv2d(feature_dim, 32, kernel_size=1, stride=1, padding=0, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(int(state_dim * 32 / feature_dim), hidden),
            nn.ReLU(),
        )
        self.gru = nn.GRU(hidden, hidden, batch_first=False)
        self.actor = nn.Sequential(nn.Linear(hidden, action_dim), nn.Softmax(dim=-1))
        self.critic = nn.Sequential(nn.Linear(hidden, 1))
        self.hidden = hidden

    def act_greedy(self, state, hidden):
        """(B, C, h, w), (1, B, D) -> (action (B,), new hidden (1, B, D))."""
        encoded = self.state_encoder(state)
        out, hidden = self.gru(encoded.view(1, encoded.size(0), encoded.size(1)), hidden)
        probs = self.actor(out[0])
        return probs.max(1)[1], hidden


class OriginalPPO(nn.Module):
    def __init__(self, *args) -> None:
        super().__init__()
        self.policy = OriginalActorCritic(*args)
        self.policy_old = OriginalActorCritic(*args)
        self.policy_old.load_state_dict(self.policy.state_dict())


class OriginalFocuser(nn.Module):
    def __init__(self, arch: str, num_classes: int, patch_size: int, policy_args: tuple, grid: int) -> None:
        super().__init__()
        self.net = getattr(torchvision.models, arch)()
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)
        self.policy = OriginalPPO(*policy_args)
        self.patch_size = patch_size
        # the original's literal table: [i/(n-1), j/(n-1)], row-major, float32
        steps = [i / (grid - 1) for i in range(grid)]
        self.actions = torch.Tensor([[r, c] for r in steps for c in steps])

    def featmap(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x)))))

    def get_patch(self, images, positions):
        size = images.size(2)
        corner = torch.floor(positions * (size - self.patch_size)).int()
        patches = []
        for i in range(images.size(0)):
            y, x = corner[i, 0].item(), corner[i, 1].item()
            patches.append(images[i : i + 1, :, y : y + self.patch_size, x : x + self.patch_size])
        return torch.cat(patches, 0)

    def forward(self, img, state, hidden):
        action, hidden = self.policy.policy_old.act_greedy(state, hidden)
        patch = self.get_patch(img, self.actions[action])
        return self.featmap(patch), action, hidden


class OriginalRecurrentClassifier(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size=input_dim, hidden_size=hidden_dim, bias=True, batch_first=True)
        self.fc = nn.Linear(hidden_dim, num_classes)
        self.dropout = nn.Dropout(dropout)

    def single_forward(self, feature, hx):
        out, hx = self.gru(feature, hx)
        b, t, _ = feature.shape
        logits = self.fc(self.dropout(out).reshape(b * t, -1))
        return logits, hx


class OriginalGFV(nn.Module):
    """The original's module tree (names and order as its state_dict)."""

    def __init__(
        self,
        num_classes: int = 200,
        patch_size: int = 128,
        glance_size: int = 224,
        focus_arch: str = "resnet50",
        policy_hidden: int = 1024,
        classifier_hidden: int = 1024,
        grid: int = 7,
        dropout: float = 0.8,
    ) -> None:
        super().__init__()
        self.glance_size = glance_size
        self.glancer = OriginalGlancer(num_classes)
        state_dim = 1280 * math.ceil(glance_size / 32) ** 2
        policy_args = (1280, state_dim, grid * grid, policy_hidden)
        self.focuser = OriginalFocuser(focus_arch, num_classes, patch_size, policy_args, grid)
        self.dropout = nn.Dropout(p=dropout)
        feat_dim = 1280 + self.focuser.net.fc.in_features
        self.classifier = OriginalRecurrentClassifier(feat_dim, classifier_hidden, num_classes, dropout)

    @torch.no_grad()
    def evaluate(self, images):
        """images (B, 3T, H, W), frames stacked on channels -> (logits (B, T, K), actions (B, T))."""
        b, tc, h, w = images.shape
        t = tc // 3
        input_prime = torch.nn.functional.interpolate(images, (self.glance_size, self.glance_size))
        maps, pooled = self.glancer(input_prime.view(b * t, 3, self.glance_size, self.glance_size))
        maps = maps.view(b, t, *maps.shape[1:])
        pooled = pooled.view(b, t, -1)
        frames = images.view(b, t, 3, h, w)
        policy_hidden = torch.zeros(1, b, self.focuser.policy.policy_old.hidden)
        classifier_hidden = torch.zeros(1, b, self.classifier.gru.hidden_size)
        logits, actions = [], []
        for step in range(t):
            local, action, policy_hidden = self.focuser(frames[:, step], maps[:, step], policy_hidden)
            feature = torch.cat([pooled[:, step], local.view(b, -1)], dim=1)[:, None]
            step_logits, classifier_hidden = self.classifier.single_forward(feature, classifier_hidden)
            logits.append(step_logits)
            actions.append(action)
        return torch.stack(logits, 1), torch.stack(actions, 1)
