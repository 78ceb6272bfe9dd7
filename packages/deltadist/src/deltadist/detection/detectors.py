"""The detectors of the detection commands by name, with what the commands do with each: build
(plain or converted by the original's rule), the training loss, predictions, MACs per frame.

* ``efficientdet_d0`` / ``efficientdet_tiny`` (effdet): loss = effdet's focal + weighted box loss
  (its total, logged as ``class_loss`` and ``weighted_box_loss``); MACs of the whole network.
* ``faster_rcnn_r101_dc5`` (torchvision parts): frames arrive letterboxed to ``size x size`` and
  ImageNet-normalised by :mod:`deltadist.detection.data`, so the model's own transform neither
  resizes (``min_size = max_size = size``) nor normalises again (mean 0, std 1); loss = the sum of
  the RPN and RoI losses; MACs = the convolutional part + the box head on 300 RoIs (the original's
  test proposals; see :func:`~deltadist.detection.faster_rcnn.roi_head_macs`).

MACs of a converted model are amortised over a clip: the keyframe's teachers once, each layer's
chosen student on the ``clip_length - 1`` other frames (:func:`deltadist.cost.clip_macs`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deltadist.cost import LayerCosts, clip_macs, layer_costs, measure_unit_costs
from deltadist.delta import BiasMode, delta_layers
from deltadist.detection.faster_rcnn import (
    DenseStage,
    convert_faster_rcnn,
    faster_rcnn_r101_dc5,
    roi_head_macs,
)
from effvid.flops import count_macs

__all__ = ["DETECTORS", "Detector", "build_detector", "faster_rcnn_for_frames"]

DETECTORS = ("efficientdet_d0", "efficientdet_tiny", "faster_rcnn_r101_dc5")
ROI_PROPOSALS = 300

TaskLoss = Callable[[torch.Tensor, Sequence[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


@dataclass
class Detector:
    """A built detector: ``net`` (its state dict is the model file's) and what the commands call."""

    name: str
    net: nn.Module
    size: int
    task_loss: TaskLoss
    predict: Callable[[torch.Tensor], list[dict[str, torch.Tensor]]]
    convert: Callable[..., list[str]]

    @property
    def is_delta(self) -> bool:
        return bool(delta_layers(self.net))

    def _dense(self, net: nn.Module) -> nn.Module:
        return DenseStage(net) if self.name.startswith("faster_rcnn") else net

    def _extra_macs(self, net: nn.Module) -> int:
        return roi_head_macs(net, ROI_PROPOSALS) if self.name.startswith("faster_rcnn") else 0

    def layer_costs(self) -> LayerCosts:
        """MAC cost of each delta layer's full student, normalised to sum 1, named as in ``net``."""
        costs = layer_costs(self._dense(self.net), (3, self.size, self.size))
        if self.name.startswith("faster_rcnn"):  # DenseStage calls the RPN head "head"
            names = tuple(f"rpn.{n}" if n.startswith("head.") else n for n in costs.names)
            costs = dataclasses.replace(costs, names=names)
        return costs

    def macs_per_frame(self, clip_length: int) -> float:
        """MACs per frame: a plain network's, or a converted one's amortised over ``clip_length``."""
        for layer in delta_layers(self.net).values():  # a training step's tensors (part of its graph)
            layer.student_delta = layer.gate_value = layer.teacher_delta = None
        if not self.is_delta:
            twin = copy.deepcopy(self.net).to("meta").eval()
            dense = count_macs(self._dense(twin), torch.empty(1, 3, self.size, self.size, device="meta"))
            return float(dense + self._extra_macs(twin))
        dense = self._dense(self.net)
        units = measure_unit_costs(dense, (3, self.size, self.size))
        return clip_macs(dense, units, clip_length) / clip_length + self._extra_macs(self.net)


def faster_rcnn_for_frames(
    size: int, *, num_classes: int, trunk: nn.Module | None = None, **kwargs
) -> nn.Module:
    """:func:`faster_rcnn_r101_dc5` for frames already letterboxed to ``size`` and normalised."""
    model = faster_rcnn_r101_dc5(num_classes=num_classes, min_size=size, max_size=size, trunk=trunk, **kwargs)
    model.transform.image_mean, model.transform.image_std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return model


def _faster_rcnn(name: str, net: nn.Module, size: int) -> Detector:
    def task_loss(
        frames: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        wanted = [{"boxes": t["boxes"].float().reshape(-1, 4), "labels": t["labels"].long()} for t in targets]
        return net(list(frames), wanted)

    @torch.no_grad()
    def predict(frames: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return net(list(frames))

    return Detector(name, net, size, task_loss, predict, convert_faster_rcnn)


def _efficientdet(name: str, net: nn.Module, size: int) -> Detector:
    from deltadist.detection.efficientdet import EfficientDetDetector, convert_efficientdet

    wrapper = EfficientDetDetector(net)
    return Detector(name, net, size, wrapper.loss, wrapper.predict, convert_efficientdet)


def build_detector(
    name: str,
    *,
    num_classes: int,
    size: int,
    delta: bool,
    factor_ch: int = 16,
    reduction: str = "min",
    gate_init: float = -1.0,
    bias_mode: BiasMode = "corrected",
    fpn_channels: int = 16,
    trunk: nn.Module | None = None,
    **faster_rcnn_options,
) -> Detector:
    """The detector ``name`` with random weights, converted by the detection rule when ``delta``.

    ``fpn_channels``: ``efficientdet_tiny`` only; ``trunk`` / ``faster_rcnn_options``: a smaller
    Faster R-CNN of the same construction (tests)."""
    if name == "efficientdet_d0":
        from deltadist.detection.efficientdet import efficientdet_d0

        detector = _efficientdet(name, efficientdet_d0(num_classes=num_classes, image_size=size), size)
    elif name == "efficientdet_tiny":
        from deltadist.detection.efficientdet import efficientdet_tiny

        net = efficientdet_tiny(num_classes=num_classes, image_size=size, fpn_channels=fpn_channels)
        detector = _efficientdet(name, net, size)
    elif name == "faster_rcnn_r101_dc5":
        net = faster_rcnn_for_frames(size, num_classes=num_classes, trunk=trunk, **faster_rcnn_options)
        detector = _faster_rcnn(name, net, size)
    else:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}; got {name!r}")
    if delta:
        detector.convert(
            detector.net, factor_ch=factor_ch, reduction=reduction, gate_init=gate_init, bias_mode=bias_mode
        )
    return detector
