"""Faster R-CNN with a ResNet-101 DC5 backbone, from torchvision's detection components.

The original's detector (mmdet 2.16 / mmtracking ``faster_rcnn_r50_dc5`` at depth 101) rebuilt
without mmcv/mmdet::

    frames (N, 3, H, W) -> transform (resize to 600 / max 1000, ImageNet normalisation)
      -> ResNet-101 DC5: conv1..layer4, strides 1,2,2,1 (layer4 stride 1, dilation 2) -> (N, 2048, H/16, W/16)
      -> channel mapper: 3x3 conv 2048 -> 512 (bias)                                 -> (N, 512, H/16, W/16)
      -> RPN: 3x3 conv 512 + 1x1 objectness (12 anchors: sizes 64..512 x ratios 0.5, 1, 2) + 1x1 deltas
      -> RoIAlign 7x7 (sampling ratio 2) on 300 proposals per frame at test
      -> two shared FC layers (512*7*7 -> 1024 -> 1024) -> 31-way scores (30 classes + background),
         class-specific boxes

mmdet's ResNet gives *every* block of the dilated stage dilation 2; torchvision's
``replace_stride_with_dilation`` keeps dilation 1 in the stage's first block, so the builder sets
``layer4.0.conv2`` to dilation 2 to match. Module names follow torchvision (``backbone.body.*``,
``backbone.mapper``, ``rpn.head.*``, ``roi_heads.box_head.fc6/fc7``, ``roi_heads.box_predictor.*``).
The detection rule (``[1:-2]`` of all Conv2d) converts 105 convolutions: every ResNet conv but the
stem, the mapper and the RPN's 3x3 conv (the two 1x1 RPN predictors are the last two).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet101
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from deltadist.delta import BiasMode
from deltadist.detection.rules import DETECTION_FACTOR_CH, DETECTION_REDUCTION, convert_detector
from deltadist.students import Reduction
from effvid.flops import count_macs

__all__ = ["DC5Backbone", "DenseStage", "convert_faster_rcnn", "faster_rcnn_r101_dc5", "roi_head_macs"]

STRIDE = 16


class DC5Backbone(nn.Module):
    """ResNet DC5 trunk + the 2048 -> 512 channel mapper: ``(N, 3, H, W) -> {"0": (N, 512, H/16, W/16)}``."""

    def __init__(self, trunk: nn.Module, out_channels: int = 512) -> None:
        super().__init__()
        self.body = nn.Sequential(
            OrderedDict(
                (name, getattr(trunk, name))
                for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            )
        )
        width = trunk.layer4[-1].conv3.out_channels
        self.mapper = nn.Conv2d(width, out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": self.mapper(self.body(x))}


def _dc5_trunk(depth_builder=resnet101) -> nn.Module:
    trunk = depth_builder(weights=None, replace_stride_with_dilation=[False, False, True])
    first = trunk.layer4[0].conv2
    first.dilation, first.padding = (2, 2), (2, 2)  # mmdet: dilation 2 in every block of the stage
    return trunk


def faster_rcnn_r101_dc5(
    *,
    num_classes: int = 30,
    min_size: int = 600,
    max_size: int = 1000,
    trunk: nn.Module | None = None,
    mapper_channels: int = 512,
    representation: int = 1024,
    proposals_test: int = 300,
) -> FasterRCNN:
    """The original's Faster R-CNN R101-DC5 with random weights (``num_classes`` without background).

    ``trunk`` replaces the ResNet-101 (any torchvision ResNet built with
    ``replace_stride_with_dilation=[False, False, True]``; the tests use a narrow one).
    Test settings as the original's: 6000 -> 300 proposals (NMS 0.7), boxes with score >= 1e-4,
    NMS 0.5, at most 100 per frame; training: 1000 proposals, 256 RPN / 512 RoI samples.
    """
    backbone = DC5Backbone(_dc5_trunk() if trunk is None else trunk, mapper_channels)
    anchors = AnchorGenerator(sizes=((64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=6000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_train=1000,
        rpn_post_nms_top_n_test=proposals_test,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(mapper_channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes + 1),
        box_score_thresh=1e-4,
        box_nms_thresh=0.5,
        box_detections_per_img=100,
        box_batch_size_per_image=512,
    )
    # the original's box head encodes deltas with stds (0.2, 0.2, 0.2, 0.2); torchvision's default
    # weights (10, 10, 5, 5) are stds (0.1, 0.1, 0.2, 0.2)
    model.roi_heads.box_coder.weights = (5.0, 5.0, 5.0, 5.0)
    return model


def convert_faster_rcnn(
    model: FasterRCNN,
    *,
    factor_ch: int = DETECTION_FACTOR_CH,
    reduction: Reduction = DETECTION_REDUCTION,
    gate_init: float = -1.0,
    bias_mode: BiasMode = "corrected",
) -> list[str]:
    """The original's rule for Faster R-CNN: ``[1:-2]`` of all Conv2d (no other exclusion)."""
    return convert_detector(
        model,
        drop_se_and_depthwise=False,
        factor_ch=factor_ch,
        reduction=reduction,
        gate_init=gate_init,
        bias_mode=bias_mode,
    )


class DenseStage(nn.Module):
    """The convolutional part of a Faster R-CNN (backbone + RPN head), shared with it, for MAC
    counting: ``(N, 3, H, W)`` already resized -> RPN objectness and box deltas. Everything after
    it (proposal selection, RoIAlign, the box head) depends on the data and runs per proposal."""

    def __init__(self, model: FasterRCNN) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.rpn.head

    def forward(self, x: torch.Tensor):
        return self.head(list(self.backbone(x).values()))


def roi_head_macs(model: FasterRCNN, proposals: int) -> int:
    """MACs of the box head and predictor on ``proposals`` RoIs of one frame, counted on ``meta``."""
    heads = copy.deepcopy(nn.Sequential(model.roi_heads.box_head, model.roi_heads.box_predictor)).to("meta")
    channels = model.backbone.out_channels
    return count_macs(heads, torch.empty(proposals, channels, 7, 7, device="meta"))
