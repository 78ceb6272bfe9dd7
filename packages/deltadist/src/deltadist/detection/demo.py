"""``deltadist-demo --task detection``: Delta Distillation of a small EfficientDet on the synthetic
video detection benchmark, on a CPU in minutes.

1. generate the benchmark (moving boxes on textured backgrounds, ImageNet VID's COCO format;
   reused when present);
2. train a small EfficientDet-style teacher (``efficientdet_tiny``, anchors sized for the benchmark's
   objects) on every frame of the pairs, Adam with the learning rate divided by 10 after 2/3 and
   again after 13/15 of the epochs;
3. convert a copy by the original's EfficientDet rule and train it with the detector's loss on all
   frames + per-layer-normalised distillation + the MAC cost of the gates;
4. evaluate both on clips of ``clip_length`` frames (keyframe first; the teacher frame by frame):
   COCO AP50 (pycocotools, every frame scored) and MACs per frame (the delta model's amortised
   over the clip, each layer on the student its gate chooses), counted by the core's flops tools;
5. print the table and the verdict against the target (AP50 within 1 point at <= 60 % of the
   teacher's MACs), write ``results.json``.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import torch

from deltadist.cost import clip_macs, layer_costs, measure_unit_costs
from deltadist.delta import delta_layers
from deltadist.detection.config import DetectionDemoConfig
from deltadist.detection.data import VidClips, VidPairs, read_vid_json
from deltadist.detection.efficientdet import EfficientDetDetector, convert_efficientdet, efficientdet_tiny
from deltadist.detection.evaluation import clip_predictor, evaluate_detection
from deltadist.detection.synthetic import generate_vid_detection
from deltadist.detection.training import DetectionDistillationLoss, train_delta_detector, train_frame_detector
from effvid.data import open_storage
from effvid.engine import EngineConfig, seed_everything
from effvid.flops import count_macs
from effvid.io import atomic_write_json

__all__ = ["DetectionDemoConfig", "run_detection_demo"]


def _clips(cfg: DetectionDemoConfig, paths) -> VidClips:
    storage = open_storage("frames", paths["frames"])
    return VidClips(read_vid_json(paths["val"]), storage, size=cfg.size, clip_length=cfg.clip_length)


def _tiny(cfg: DetectionDemoConfig):
    return efficientdet_tiny(
        num_classes=cfg.num_classes,
        image_size=cfg.size,
        fpn_channels=cfg.fpn_channels,
        anchor_scale=cfg.anchor_scale,
    )


def run_detection_demo(cfg: DetectionDemoConfig, run_dir: Path) -> dict:
    warnings.filterwarnings("ignore", category=FutureWarning)  # effdet's torch.jit.script
    seed_everything(cfg.seed)
    root = Path(cfg.root)
    paths = {
        "frames": root / "frames",
        "train": root / "annotations" / "train.json",
        "val": root / "annotations" / "val.json",
    }
    if not paths["val"].is_file():
        generate_vid_detection(
            root,
            num_videos={"train": cfg.train_videos, "val": cfg.val_videos},
            num_frames=cfg.num_frames,
            size=cfg.size,
            num_classes=cfg.num_classes,
            seed=cfg.seed,
        )
    storage = open_storage("frames", paths["frames"])
    pairs = VidPairs(
        read_vid_json(paths["train"]), storage, size=cfg.size, frames_per_video=cfg.frames_per_video
    )
    clips = _clips(cfg, paths)
    clock, cpu_clock = time.perf_counter(), time.process_time()

    teacher = _tiny(cfg)
    detector = EfficientDetDetector(teacher)
    train_frame_detector(
        teacher,
        detector.loss,
        pairs,
        cfg=EngineConfig(epochs=cfg.teacher_epochs, progress=False, seed=cfg.seed),
        run_dir=run_dir / "teacher",
        batch_size=cfg.batch_size,
        lr=cfg.teacher_lr,
        step_epochs=(max(1, cfg.teacher_epochs * 2 // 3), max(1, cfg.teacher_epochs * 13 // 15)),
    )
    detector.eval()
    teacher_eval = evaluate_detection(clip_predictor(teacher, detector.predict), clips, batch_size=2)
    with torch.device("meta"):
        meta = _tiny(cfg)
    teacher_macs = count_macs(meta.eval(), torch.empty(1, 3, cfg.size, cfg.size, device="meta"))
    teacher_s = time.perf_counter() - clock

    delta = copy.deepcopy(teacher)
    convert_efficientdet(delta, factor_ch=cfg.factor_ch, gate_init=cfg.gate_init)
    delta_detector = EfficientDetDetector(delta)
    costs = layer_costs(delta, (3, cfg.size, cfg.size))
    loss = DetectionDistillationLoss(delta, delta_detector.loss, costs, alpha=cfg.alpha, beta=cfg.beta)
    train_delta_detector(
        loss,
        pairs,
        cfg=EngineConfig(epochs=cfg.delta_epochs, progress=False, seed=cfg.seed, grad_clip=2.0),
        run_dir=run_dir / "delta",
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_students=cfg.lr_students,
        step_epochs=(max(1, cfg.delta_epochs * 4 // 7),),
        distill_fraction=2 / 7,
    )
    delta_detector.eval()
    for layer in delta_layers(delta).values():  # the last training step's tensors (part of its graph)
        layer.student_delta = layer.gate_value = layer.teacher_delta = None
    delta_eval = evaluate_detection(clip_predictor(delta, delta_detector.predict), clips, batch_size=2)
    units = measure_unit_costs(delta, (3, cfg.size, cfg.size))
    delta_macs = clip_macs(delta, units, cfg.clip_length) / cfg.clip_length
    full = sum(layer.choice() == "full" for layer in delta_layers(delta).values())
    total_s = time.perf_counter() - clock
    cpu_s = time.process_time() - cpu_clock

    ratio = delta_macs / teacher_macs
    drop = 100 * (teacher_eval["ap50"] - delta_eval["ap50"])
    met = drop <= 1.0 and ratio <= 0.60
    lines = [
        f"{'model':<28} {'AP50':>7} {'MMAC/frame':>11} {'ms/frame':>9}",
        f"{'teacher (frame-based)':<28} {100 * teacher_eval['ap50']:>7.2f} {teacher_macs / 1e6:>11.3f} {teacher_eval['ms_per_frame']:>9.2f}",
        f"{f'delta (keyframe every {cfg.clip_length})':<28} {100 * delta_eval['ap50']:>7.2f} {delta_macs / 1e6:>11.3f} {delta_eval['ms_per_frame']:>9.2f}",
        f"delta layers on the full student: {full} of {len(delta_layers(delta))}; MACs {100 * ratio:.1f} % of the teacher's",
        f"target (AP50 within 1 point at <= 60 % of the MACs): {'MET' if met else 'NOT MET'} "
        f"(AP50 change {-drop:+.2f} points)",
        f"time: teacher {teacher_s:.0f} s, total {total_s:.0f} s (CPU time {cpu_s:.0f} s, "
        f"{torch.get_num_threads()} thread(s))",
    ]
    print("\n".join(lines))
    results = {
        "teacher": {**teacher_eval, "macs_per_frame": teacher_macs},
        "delta": {
            **delta_eval,
            "macs_per_frame": delta_macs,
            "full_students": full,
            "layers": len(delta_layers(delta)),
        },
        "macs_ratio": ratio,
        "ap50_drop_points": drop,
        "target_met": met,
        "seconds": total_s,
        "cpu_seconds": cpu_s,
        "threads": torch.get_num_threads(),
        "note": "AP50 on every real frame of the validation clips (no score filter); MACs: convolutions and "
        "matrix products (FlopCounterMode), delta amortised over a clip",
    }
    atomic_write_json(run_dir / "results.json", results)
    return results
