import sys
from pathlib import Path

import pytest
import yaml

# the tests import their helper module (original_reference.py) from this folder
sys.path.insert(0, str(Path(__file__).parent))

#: a tiny synthetic set: 3 classes, 8-frame videos of 32x32
SPEC = {"num_classes": 3, "num_videos": 12, "num_frames": 8, "size": 32}
ENGINE = ["--engine.epochs", "1", "--engine.progress", "False", "--engine.checkpoint_every", "1000"]


def write_config(path: Path, info, storage: str = "lmdb") -> Path:
    """Data and model of the tiny runs (4 frames of 32x32, a 4-wide ResNet-18, a tiny policy)."""
    cfg = {
        "data": {
            "format": "list",
            "storage": storage,
            "path_frame": str(info.storage_path),
            "path_label": str(info.train_list),
            "path_classid": str(info.classes),
            "sampler": "segments",
            "num_frames": 4,
            "batch_size": 4,
            "transform": {"resize": 32, "crop": 32, "train_crop": "center", "flip": False},
        },
        "model": {
            "arch": "resnet18",
            "width": 4,
            "num_class": 3,
            "policy_input_size": 32,
            "policy_width": 0.25,
            "policy_hidden": 8,
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_train_config(path: Path) -> Path:
    optim = {"optimizer": "adam", "lr": 0.002, "q_lr": [0.002], "q_weight_decay": [0.0], "p_lr": 0.01}
    path.write_text(yaml.safe_dump({"optim": optim}))
    return path


@pytest.fixture(scope="session")
def stages(tmp_path_factory):
    """The synthetic set as frames and LMDB, and the four stages trained one epoch each through
    videoiq-train, each from the previous one's model.pt."""
    import fire

    from effvid.data import SyntheticSpec, generate
    from videoiq.cli import TRAIN

    root = tmp_path_factory.mktemp("videoiq")
    infos = {kind: generate(root / kind, SyntheticSpec(storage=kind, **SPEC)) for kind in ("frames", "lmdb")}
    cfg = [str(write_config(root / "cfg.yml", infos["lmdb"])), str(write_train_config(root / "train.yml"))]
    runs = {name: root / name for name in ("fp", "ap", "pb", "policy")}

    def train(stage: str, out: Path, *args: str) -> Path:
        fire.Fire(TRAIN, command=[*cfg, "--stage", stage, *args, "--output_dir", str(out), *ENGINE])
        return out / "model.pt"

    fp = train("fp", runs["fp"])
    ap = train("ap", runs["ap"], "--checkpoint.init", str(fp))
    pb = train("policy_backbone", runs["pb"])
    policy = train(
        "policy",
        runs["policy"],
        "--checkpoint.init",
        str(ap),
        "--checkpoint.teacher",
        str(fp),
        "--checkpoint.policy_backbone",
        str(pb),
    )
    return {
        "root": root,
        "infos": infos,
        "cfg": cfg,
        "files": {"fp": fp, "ap": ap, "pb": pb, "policy": policy},
        "train": train,
    }
