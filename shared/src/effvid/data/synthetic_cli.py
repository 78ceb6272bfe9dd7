"""``effvid-synth``: write the synthetic benchmark (see :mod:`effvid.data.synthetic`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from effvid.cli import build_command, run_cli
from effvid.config import RunConfig, option
from effvid.data.synthetic import SyntheticSpec, generate

__all__ = ["SYNTH", "main"]


@dataclass
class SynthConfig(RunConfig):
    root: str = option(
        "data/synthetic", "where to write the benchmark (must not exist, or hold the same spec)"
    )
    spec: SyntheticSpec = option(doc="what to generate", default_factory=SyntheticSpec)


def _run(cfg: SynthConfig, run_dir: Path) -> None:
    info = generate(cfg.root, cfg.spec, progress=True)
    print(
        f"synthetic benchmark in {info.root}: {info.storage} at {info.storage_path}, lists {info.train_list.name}/"
        f"{info.val_list.name}, {info.num_classes} classes"
    )


SYNTH = build_command(_run, SynthConfig, name="effvid-synth", doc="Generate the synthetic video benchmark.")


def main() -> None:
    run_cli(SYNTH, name="effvid-synth")
