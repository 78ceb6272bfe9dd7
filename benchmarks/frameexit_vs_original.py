"""Inputs for timing ``frameexit-infer`` against the original's ``inference.py`` on the same
weights and frames (see benchmarks/frameexit.md, "Against the original").

``prepare OUT`` writes, under OUT:

* ``frames/v_<id>.mp4/image_%05d.jpeg``: ActivityNet-style frame folders (466x350 JPEGs, the
  original's 350-px-short-side extraction; 5 to 60 frames per video), read by both programs;
* ``activity_net.json``, ``split.txt``, ``classes.txt``: the annotation files both read;
* ``mixed.pth``, ``all10.pth``: checkpoints in the authors' layout (``module.``-prefixed
  ``ConditionalFrameExitInferenceModel`` keys; ResNet-50, 200 classes), random weights. In
  ``mixed.pth`` each gate's bias is set from the data so that about a quarter of the videos still
  running exit at every step (about 4.5 frames per video); in ``all10.pth`` no gate ever exits.
  ``--model.first_threshold 0.0`` makes every video exit at the first frame with either file;
* ``principal.pth``: the same network, with gates that read the features' first principal
  direction (a random gate's logits vary less between these videos than int8 moves them; a
  trained gate reads directions along which videos differ), biases set the same way. It is the
  checkpoint on which approximate inference (int8, bf16) can save time while keeping the exits.

It prints both command lines. The original needs its four documented fixes to run on a CPU with
current packages (research notes, frameexit.md section 8): no ``.cuda()``, ``map_location``, the
metrics' ``device``, and the label scatter's dtype.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from effvid.checkpoint import remap_state_dict
from effvid.data import build_dataset
from frameexit.conversion import convert_original_state_dict
from frameexit.data import frameexit_data_config
from frameexit.model import FrameExitModel

NUM_CLASSES = 200


def natural_frame(rng: np.random.Generator, height: int = 350, width: int = 466) -> np.ndarray:
    """A smooth colour field with mild noise: decodes like a photograph, not like random noise."""
    coarse = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    frame += rng.normal(0, 6, frame.shape).astype(np.int16)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_videos(out: Path, videos: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    keys = []
    for v in range(videos):
        key = f"v_bench{v:03d}.mp4"
        folder = out / "frames" / key
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(int(rng.integers(5, 61))):
            cv2.imwrite(
                str(folder / f"image_{f + 1:05d}.jpeg"), natural_frame(rng), [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
        keys.append(key)
    names = [f"activity {c:03d}" for c in range(NUM_CLASSES)]

    def entry(subset: str, label: str) -> dict:  # the fields of activity_net.v1-3.min.json
        ann = {"label": label, "segment": [0.0, 10.0]}
        return {"subset": subset, "duration": 10.0, "resolution": "466x350", "url": "", "annotations": [ann]}

    database = {f"train{c}": entry("training", n) for c, n in enumerate(names)}
    for v, key in enumerate(keys):
        database[key[2:-4]] = entry("validation", names[v % NUM_CLASSES])
    (out / "activity_net.json").write_text(json.dumps({"database": database}))
    (out / "split.txt").write_text("".join(k + "\n" for k in keys))
    (out / "classes.txt").write_text("".join(n + "\n" for n in names))
    return keys


#: ours -> the authors' key names (the inverse of frameexit.conversion.RULES)
TO_ORIGINAL = [
    (r"^backbone\.conv1\.", "backbone.0."),
    (r"^backbone\.bn1\.", "backbone.1."),
    *[(rf"^backbone\.layer{i}\.", f"backbone.{i + 3}.") for i in range(1, 5)],
    (r"^mlp\.", "mlp.layers."),
    (r"^gates\.(\d+)\.fc1\.", r"exit_selector.\1.conv1."),
    (r"^gates\.(\d+)\.fc2\.", r"exit_selector.\1.conv2."),
    (r"^gates\.(\d+)\.", r"exit_selector.\1."),
]


def to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> the authors' layout: renamed, 1x1 convolutions, gates negated."""
    out = remap_state_dict(state, TO_ORIGINAL)
    for key in list(out):
        if re.match(r"^exit_selector\.\d+\.conv[12]\.weight$", key):
            out[key] = out[key][:, :, None, None]
        if re.match(r"^exit_selector\.\d+\.linear\.(weight|bias)$", key):
            out[key] = -out[key]
    return {f"module.{k}": v for k, v in out.items()}


@torch.no_grad()
def clip_features(model: FrameExitModel, out: Path) -> torch.Tensor:
    """(videos, T, D) per-frame features, each video's frames in FrameExit's order, read by the
    project's own data pipeline."""
    data = replace(
        frameexit_data_config(),
        path_frame=str(out / "frames"),
        path_split=str(out / "split.txt"),
        path_label=str(out / "activity_net.json"),
        path_classid=str(out / "classes.txt"),
    )
    dataset = build_dataset(data, num_classes=NUM_CLASSES)
    return torch.stack([model.frame_features(dataset[i]["video"]) for i in range(len(dataset))])


@torch.no_grad()
def gate_scores(model: FrameExitModel, h: torch.Tensor) -> torch.Tensor:
    """(videos, T-1) gate logits without their bias."""
    z = torch.cummax(h, dim=1).values  # max pooling over steps
    return torch.stack(
        [
            model.gates[t - 1](z[:, t], z[:, t - 1]) - model.gates[t - 1].linear.bias
            for t in range(1, z.shape[1])
        ],
        dim=1,
    )


@torch.no_grad()
def read_principal_direction(model: FrameExitModel, h: torch.Tensor) -> None:
    """Make every gate's exit logit the running max's projection on the features' first principal
    direction (plus the bias set later), within the original gate architecture: fc1 rows +d and
    -d, ReLU, identity BatchNorms and fc2, and a last layer that subtracts the two halves.

    Random gates barely tell the benchmark's videos apart (their logits vary by about 0.02 between
    videos, less than int8's error); a trained gate reads directions along which videos differ.
    This one reads the direction along which they differ most."""
    flat = h.flatten(0, 1)
    direction = torch.linalg.svd(flat - flat.mean(0), full_matrices=False).Vh[0]
    for gate in model.gates:
        for fc in (gate.fc1, gate.fc2):
            fc.weight.zero_()
            fc.bias.zero_()
        gate.fc1.weight[0], gate.fc1.weight[1] = direction, -direction
        gate.fc2.weight[0, 0] = gate.fc2.weight[1, 1] = 1.0
        for bn in (gate.bn1, gate.bn2):
            bn.reset_parameters()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) = x
        gate.linear.weight.zero_()
        gate.linear.weight[0, 0], gate.linear.weight[0, 1] = 1.0, -1.0


def set_gate_biases(model: FrameExitModel, scores: torch.Tensor, exit_share: float) -> list[float]:
    """Each gate's bias lets about ``exit_share`` of the running videos go, halfway between two
    videos' scores (so that no video sits on the threshold); returns the smallest distances."""
    running = torch.ones(len(scores), dtype=torch.bool)
    margins = []
    for t in range(scores.shape[1]):
        alive = scores[running, t].sort().values
        if len(alive) < 2:
            bias = -float(alive.max()) - 1.0 if len(alive) else 0.0
        else:
            target = min(max(round(len(alive) * exit_share), 1), len(alive) - 1)
            near = range(max(target - 3, 1), min(target + 3, len(alive) - 1) + 1)
            k = max(near, key=lambda j: float(alive[-j] - alive[-j - 1]))  # the widest gap near it
            bias = -float(alive[-k - 1] + alive[-k]) / 2
            margins.append(float((alive + bias).abs().min()))
        model.gates[t].linear.bias.fill_(bias)
        running &= scores[:, t] + bias <= 0
    return margins


@torch.no_grad()
def prepare(out: Path, videos: int, seed: int, exit_share: float) -> None:
    if (out / "split.txt").exists():  # frames written by an earlier call: keep them
        keys = (out / "split.txt").read_text().split()
    else:
        keys = write_videos(out, videos, seed)
    torch.manual_seed(seed)
    model = FrameExitModel(backbone="resnet50", num_classes=NUM_CLASSES, num_frames=10).eval()
    h = clip_features(model, out)
    scores = gate_scores(model, h)
    margins = set_gate_biases(model, scores, exit_share)
    print(
        f"mixed.pth: smallest distance of a gate logit from its threshold {min(margins):.3g}, "
        f"spread between videos {float(scores.std(0).mean()):.3g}"
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(to_original(state), out / "mixed.pth")
    for t in range(9):
        state[f"gates.{t}.linear.bias"].fill_(-1e4)
    torch.save(to_original(state), out / "all10.pth")
    read_principal_direction(model, h)
    scores = gate_scores(model, h)
    margins = set_gate_biases(model, scores, exit_share)
    print(
        f"principal.pth: smallest distance {min(margins):.3g}, spread between videos {float(scores.std(0).mean()):.3g}"
    )
    torch.save(to_original(model.state_dict()), out / "principal.pth")
    assert convert_original_state_dict(torch.load(out / "mixed.pth")).keys() == model.state_dict().keys()
    assert len(keys) == len(h)
    files = f"--data.path_split {out}/split.txt --data.path_label {out}/activity_net.json --data.path_classid {out}/classes.txt"
    print(
        f"original (in its checkout):\n  python inference.py config/activitynet_inference_2d.yml "
        f"--data.path_frame {out}/frames/ {files} --checkpoint.init {out}/mixed.pth "
        f"--model.backbone.pretrained False\n"
        f"effvid:\n  frameexit-infer activitynet --data.path_frame {out}/frames {files} "
        f"--checkpoint.init {out}/mixed.pth --output_dir runs/bench-infer --fresh"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write frames, annotation files and checkpoints")
    p.add_argument("out", type=Path)
    p.add_argument("--videos", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exit_share", type=float, default=0.25)
    args = parser.parse_args()
    prepare(args.out, args.videos, args.seed, args.exit_share)


if __name__ == "__main__":
    main()
