"""Delta Distillation for video object detection: EfficientDet (on effdet) and Faster R-CNN
R101-DC5 (on torchvision's detection components), converted by the original's detection rule."""

from deltadist.detection.rules import (
    DETECTION_FACTOR_CH,
    DETECTION_REDUCTION,
    convert_detector,
    detection_layer_names,
)

__all__ = ["DETECTION_FACTOR_CH", "DETECTION_REDUCTION", "convert_detector", "detection_layer_names"]
