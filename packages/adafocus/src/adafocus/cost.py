"""MACs per video, measured by the core's counter (the paper's "GFLOPs" are GMACs).

One step of AdaFocus runs four units once per video: ``glance`` (one frame at the glance size),
``policy`` (encoder, GRU step and actor; the critic is used only in training), ``focus`` (one
P x P patch) and ``classifier`` (one GRU step and the Linear). A video that stops after ``s``
steps costs ``s x (glance + policy + focus + classifier)``, less ``policy + focus + classifier``
for each frame it skipped (AdaFocus+: a skipped frame is only glanced); cropping and resizing are indexing
and interpolation, which the counter (rightly) does not count.
"""

from __future__ import annotations

import copy

import torch

from adafocus.model import AdaFocus
from effvid.flops import UnitCosts, per_sample_macs

__all__ = ["UNITS", "measure_unit_costs", "video_macs"]

UNITS = ("glance", "policy", "focus", "classifier")


def measure_unit_costs(model: AdaFocus, frame_hw: tuple[int, int]) -> UnitCosts:
    """MACs of one execution of each unit for frames of size ``frame_hw``, on the meta device."""
    meta = copy.deepcopy(model).to("meta").eval()
    height, width = frame_hw
    frame = torch.empty(1, 3, height, width, device="meta")
    glance_map = torch.empty(1, meta.policy.in_channels, *meta.policy.map_size, device="meta")
    policy_hidden = torch.empty(1, meta.policy.hidden, device="meta")
    patch = torch.empty(1, 3, model.patch_size, model.patch_size, device="meta")
    feature = torch.empty(1, meta.classifier.gru.input_size, device="meta")
    classifier_hidden = torch.empty(1, meta.classifier.gru.hidden_size, device="meta")
    costs = UnitCosts()
    costs.measure("glance", meta.glance_frames, frame)
    costs.measure("policy", meta.policy.act, glance_map, policy_hidden, sample=False)
    costs.measure("focus", meta.focus.forward_features, patch)
    costs.measure("classifier", meta.classifier.step, feature, classifier_hidden)
    return costs


def video_macs(
    steps: torch.Tensor | int,
    costs: UnitCosts,
    *,
    policy: bool = True,
    focused: torch.Tensor | int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-video MACs (float64, (B,)) for videos that ran ``steps`` steps each.

    Returns ``total`` and one entry per unit; ``steps`` may be an int (every video the same).
    ``focused``: of those steps, the ones that were not skipped (AdaFocus+): the glance runs on
    every step reached, the policy, focus network and classifier only on the focused ones
    (default: all ``steps``). ``policy=False``: the positions did not come from the policy
    (random patches), which then cost nothing.
    """
    counts = torch.as_tensor(steps, dtype=torch.float64)
    done = counts if focused is None else torch.as_tensor(focused, dtype=torch.float64)
    ran = {"glance": counts} | {
        unit: done * (1.0 if policy or unit != "policy" else 0.0) for unit in UNITS[1:]
    }
    out = {unit: per_sample_macs({unit: n}, costs) for unit, n in ran.items()}
    out["total"] = per_sample_macs(ran, costs)
    return out
