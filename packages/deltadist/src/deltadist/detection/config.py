"""Options of the detection demo (``deltadist-demo --task detection --detection.<option> ...``)."""

from __future__ import annotations

from dataclasses import dataclass

from effvid.config import option

__all__ = ["DetectionDemoConfig"]


@dataclass
class DetectionDemoConfig:
    root: str = option(
        "data/synthetic-deltadist-detection", "where the benchmark is generated (reused if present)"
    )
    train_videos: int = option(24, "training videos")
    val_videos: int = option(24, "validation videos")
    num_frames: int = option(20, "frames per video")
    num_classes: int = option(3, "object classes (colours)")
    size: int = option(64, "frame side in pixels (the detector's input)")
    fpn_channels: int = option(32, "BiFPN / head width of the small EfficientDet")
    anchor_scale: float = option(
        2.0, "anchor side in strides (D0's 4 makes 32-pixel anchors for 12-22-pixel objects)"
    )
    frames_per_video: int = option(16, "training pairs per video (the original: 15)")
    clip_length: int = option(10, "evaluation clip length (a keyframe every clip_length frames)")
    teacher_epochs: int = option(
        30, "teacher training epochs (learning rate / 10 after 2/3 of them and again after 13/15)"
    )
    teacher_lr: float = option(2e-3, "Adam learning rate of the teacher")
    delta_epochs: int = option(24, "delta-model training epochs")
    lr: float = option(1e-3, "SGD learning rate of the teachers inside the delta model")
    lr_students: float = option(0.1, "SGD learning rate of the students and gates (the original's)")
    alpha: float = option(100.0, "distillation weight (the original's EfficientDet value)")
    beta: float = option(1.0, "cost weight (MAC costs normalised to sum 1)")
    factor_ch: int = option(2, "channel reduction of the low-rank students (the original's detection: 16)")
    gate_init: float = option(1.0, "initial gate logit (> 0: layers start on their full students)")
    batch_size: int = option(8, "pairs per batch")
    seed: int = option(0, "seed of the data and the runs")
