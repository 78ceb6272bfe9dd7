"""``effvid-synth``: write the synthetic benchmark (see :mod:`effvid.data.synthetic`)."""

from __future__ import annotations

from dataclasses import dataclass

from effvid.cli import build_command
from effvid.config import option
from effvid.data.synthetic import SyntheticSpec, generate

__all__ = ["SYNTH", "SynthConfig"]


@dataclass
class SynthConfig:
    root: str = option(
        "data/synthetic", "where to write the benchmark (must not exist, or hold the same spec)"
    )
    spec: SyntheticSpec = option(doc="what to generate", default_factory=SyntheticSpec)


def _run(cfg: SynthConfig, _run_dir: None) -> None:
    info = generate(cfg.root, cfg.spec, progress=True)
    print(
        f"synthetic benchmark in {info.root}: {info.storage} at {info.storage_path}, lists {info.train_list.name}/"
        f"{info.val_list.name}, {info.num_classes} classes"
    )


SYNTH = build_command(
    _run, SynthConfig, name="effvid-synth", doc="Generate the synthetic video benchmark.", run_dir=False
)
