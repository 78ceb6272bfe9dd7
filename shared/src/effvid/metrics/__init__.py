"""Evaluation metrics as ignite ``Metric``s that give the same value under DDP as in one process.

* :func:`topk_accuracy` - ignite's own top-k accuracy (single-label), re-exported by name;
* :class:`HitAt1` - video-level Hit@1: the top class is one of the video's labels;
* :class:`VideoMAP` - ActivityNet-style mAP over video scores;
* :class:`MeanIoU` - segmentation mIoU from a confusion matrix with an ignore label;
* :class:`CocoAP50` - detection AP at IoU 0.5, evaluated by pycocotools.

Ranking metrics (mAP, AP50) gather every process's scores before computing; counting metrics
sum their counters across processes.
"""

from effvid.metrics.classification import HitAt1, VideoMAP, average_precision, topk_accuracy
from effvid.metrics.detection import CocoAP50
from effvid.metrics.segmentation import MeanIoU

__all__ = ["CocoAP50", "HitAt1", "MeanIoU", "VideoMAP", "average_precision", "topk_accuracy"]
