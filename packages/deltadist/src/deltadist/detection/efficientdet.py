"""EfficientDet on ``effdet`` (Ross Wightman's efficientdet-pytorch, the code the authors vendored).

Why effdet and not a re-implementation: it is the maintained continuation of exactly the code the
original vendored (v0.1.6), it installs from the package index with a modern timm and runs on
torch 2.14, and its module tree is the one the original's conversion rule walked: 150 ``Conv2d``
in D0, of which the detection rule (:mod:`deltadist.detection.rules`) converts 68, 37 of them with
a bias, as documented for the original. ``effdet`` is the ``detection`` extra of this package.

    >>> net = efficientdet_d0(num_classes=30)          # no weights are downloaded
    >>> names = convert_efficientdet(net)              # 68 delta layers, rank min(Cin, Cout) // 16
    >>> detector = EfficientDetDetector(net)
    >>> losses = detector.loss(frames, targets)        # (N, 3, S, S), one target dict per frame
    >>> dets = detector.predict(frames)                # one {"boxes", "scores", "labels"} per frame

Frames are square ``S x S`` (``config.image_size``), already normalised; a converted model takes
clips rolled into the batch axis (``(N*T, 3, S, S)``, clip-major, see :mod:`deltadist.delta`).
Boxes are ``xyxy`` in pixels of the input frame; labels count from 1 (0 is not a class).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deltadist.delta import BiasMode
from deltadist.detection.rules import DETECTION_FACTOR_CH, DETECTION_REDUCTION, convert_detector
from deltadist.students import Reduction

__all__ = [
    "EfficientDetDetector",
    "convert_efficientdet",
    "efficientdet_d0",
    "efficientdet_tiny",
]


def _effdet():
    try:
        with warnings.catch_warnings():  # effdet scripts a helper with the deprecated torch.jit.script
            warnings.simplefilter("ignore", FutureWarning)
            import effdet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientDet needs the effdet package: pip install 'deltadist[detection]'"
        ) from exc
    return effdet


def _build(config_updates: dict[str, Any]) -> nn.Module:
    effdet = _effdet()
    config = effdet.get_efficientdet_config("tf_efficientdet_d0")
    config.update(config_updates)
    return effdet.EfficientDet(config, pretrained_backbone=False)


def efficientdet_d0(*, num_classes: int = 30, image_size: int = 512) -> nn.Module:
    """EfficientDet-D0 (``tf_efficientdet_d0``: EfficientNet-B0 backbone, 3 BiFPN cells of 64
    channels, class and box nets of 3 separable convolutions) with random weights.

    As the original: 30 classes (ImageNet VID), drop-path off (``drop_path_rate 0``, so that the
    teacher-target and student passes see the same network).
    """
    return _build(
        {
            "num_classes": num_classes,
            "image_size": (image_size, image_size),
            "backbone_args": {"drop_path_rate": 0.0},
        }
    )


def efficientdet_tiny(
    *,
    num_classes: int = 3,
    image_size: int = 64,
    fpn_channels: int = 16,
    backbone: str = "test_efficientnet",
    anchor_scale: float = 4.0,
) -> nn.Module:
    """A CPU-sized EfficientDet of the same structure (the demo's and the tests' teacher): timm's
    ``test_efficientnet`` backbone, one BiFPN cell and one head convolution on levels 3-5.

    ``anchor_scale``: anchor side in strides (D0's 4: 32-pixel anchors on level 3). The detection
    demo uses 2 (16 pixels on level 3), because its objects are 12-22 pixels across and with D0's
    anchors a 13-pixel box overlaps its best anchor by IoU 0.16 (the teacher reached AP50 46 with
    4 and 87 with 2 on the same data and schedule)."""
    return _build(
        {
            "backbone_name": backbone,
            "backbone_args": {"drop_path_rate": 0.0},
            "num_classes": num_classes,
            "image_size": (image_size, image_size),
            "fpn_channels": fpn_channels,
            "fpn_cell_repeats": 1,
            "box_class_repeats": 1,
            "min_level": 3,
            "max_level": 5,
            "num_levels": 3,
            "anchor_scale": anchor_scale,
            "max_detection_points": 500,  # top-k over anchors x classes; D0's 5000 exceeds a 64x64 frame's
        }
    )


def convert_efficientdet(
    model: nn.Module,
    *,
    factor_ch: int = DETECTION_FACTOR_CH,
    reduction: Reduction = DETECTION_REDUCTION,
    gate_init: float = -1.0,
    bias_mode: BiasMode = "corrected",
) -> list[str]:
    """The original's EfficientDet rule: ``[1:-2]`` of all Conv2d, without squeeze-excitation and
    depthwise convolutions (so ``class_net.predict.conv_pw`` is converted, the box predictor not)."""
    return convert_detector(
        model,
        drop_se_and_depthwise=True,
        factor_ch=factor_ch,
        reduction=reduction,
        gate_init=gate_init,
        bias_mode=bias_mode,
    )


def _targets_yxyx(
    targets: Sequence[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, torch.Tensor]:
    """effdet's padded batch targets: ``bbox`` (N, M, 4) yxyx and ``cls`` (N, M), padding -1."""
    most = max([int(t["boxes"].shape[0]) for t in targets] + [1])
    bbox = torch.full((len(targets), most, 4), -1.0, device=device)
    cls = torch.full((len(targets), most), -1.0, device=device)
    for i, t in enumerate(targets):
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(t["labels"], device=device).reshape(-1)
        if labels.numel() and int(labels.min()) < 1:
            raise ValueError(f"target {i}: labels count from 1, got {labels.tolist()}")
        bbox[i, : len(boxes)] = boxes[:, [1, 0, 3, 2]]
        cls[i, : len(labels)] = labels.float()
    return {"bbox": bbox, "cls": cls}


class EfficientDetDetector(nn.Module):
    """An effdet ``EfficientDet`` (plain or converted) with its anchors, loss and post-processing.

    ``loss(frames, targets)``: effdet's focal + Huber loss (the original's "bench" loss) over all
    frames, ``frames`` ``(N, 3, S, S)``, ``targets`` one ``{"boxes": (M, 4) xyxy, "labels": (M,)}``
    per frame -> ``{"class_loss", "weighted_box_loss"}`` (0-dim each), whose sum is effdet's total
    (class loss + ``box_loss_weight`` x box loss); ``loss_from_outputs`` takes
    the head outputs of a forward that already ran (the delta training's).
    ``predict(frames)``: one ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`` per frame,
    ``D <= max_det_per_image`` (effdet pads with zero-score rows; they are dropped here).

    Only ``model`` is a submodule (the state dict is the network's, prefixed ``model.``); effdet's
    train/predict benches share it and are kept outside the module tree.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        effdet = _effdet()
        self.model = model
        self._benches = {
            "train": effdet.DetBenchTrain(model, create_labeler=True),
            "predict": effdet.DetBenchPredict(model),
        }

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.model.config.image_size)

    def _bench(self, kind: str, device: torch.device):
        bench = self._benches[kind]
        bench.anchors.to(device)  # anchors are buffers of the bench, not of the network
        return bench

    def forward(self, frames: torch.Tensor):
        """``(N, 3, S, S)`` -> the head outputs: (per-level class logits, per-level box regressions)."""
        return self.model(frames)

    def loss_from_outputs(
        self,
        outputs: tuple[list[torch.Tensor], list[torch.Tensor]],
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        class_out, box_out = outputs
        if class_out[0].shape[0] != len(targets):
            raise ValueError(f"{class_out[0].shape[0]} frames but {len(targets)} targets")
        bench = self._bench("train", class_out[0].device)
        padded = _targets_yxyx(targets, class_out[0].device)
        cls_targets, box_targets, positives = bench.anchor_labeler.batch_label_anchors(
            padded["bbox"], padded["cls"]
        )
        loss, class_loss, _ = bench.loss_fn(class_out, box_out, cls_targets, box_targets, positives)
        # terms that sum to effdet's total (class + box_loss_weight * box), as the trainers sum them
        return {"class_loss": class_loss, "weighted_box_loss": loss - class_loss}

    def loss(
        self, frames: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        return self.loss_from_outputs(self.model(frames), targets)

    @torch.no_grad()
    def predict(self, frames: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        bench = self._bench("predict", frames.device)
        dets = bench(frames)  # (N, D, 6): x1, y1, x2, y2, score, class
        out = []
        for d in dets:
            d = d[d[:, 4] > 0]
            out.append({"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()})
        return out
