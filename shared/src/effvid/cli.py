"""Fire entry points shared by every effvid command.

A command is a function ``run(cfg, run_dir)`` plus its schema. :func:`build_command` turns it
into the Fire-facing ``fn(*config_paths, **overrides)``::

    frameexit-infer a.yml b.yml --data.path_frame X --model.num_class 101

Reserved flags, handled here and never reaching the schema:

* ``--help``: Fire passes it into ``**overrides`` as ``help=True``; prints every option.
* ``--print_config``: prints the resolved YAML and exits without running.

Every run writes into ``cfg.output_dir`` (default: ``runs/<command>-<timestamp>``), starting
with the resolved ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from effvid.config import ConfigError, RunConfig, config_to_yaml, load_config, schema_help
from effvid.io import atomic_write_text

__all__ = ["build_command", "make_run_dir", "run_cli"]

C = TypeVar("C", bound=RunConfig)

_RESERVED = ("help", "print_config")


def make_run_dir(output_dir: str | None, command_name: str, *, root: str | Path = "runs") -> Path:
    """Create (or reuse, for resuming) the run directory and return it."""
    if output_dir:
        run_dir = Path(output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command_name}-{stamp}"
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            run_dir = base.with_name(f"{base.name}-{n}")
            n += 1


def build_command(
    run: Callable[[C, Path], Any],
    schema: type[C],
    *,
    name: str,
    doc: str,
) -> Callable[..., None]:
    """Wrap ``run(cfg, run_dir)`` as a Fire command ``fn(*config_paths, **overrides)``.

    Args:
        run: the command body; receives the resolved config and the created run directory.
        schema: dataclass subclass of :class:`~effvid.config.RunConfig`.
        name: the console-script name (used in help text and default run-dir names).
        doc: one paragraph describing the command, shown by ``--help``.
    """
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema) and issubclass(schema, RunConfig)):
        raise TypeError(f"{name}: schema must be a dataclass subclass of RunConfig, got {schema!r}")

    def command(*config_paths: str, **overrides: Any) -> None:
        flags = {k: overrides.pop(k) for k in _RESERVED if k in overrides}
        if flags.get("help"):
            print(f"usage: {name} [CONFIG.yml ...] [--section.key VALUE ...]\n\n{doc}\n")
            print(
                "Reserved flags:\n  --help  print this text\n  --print_config  print the resolved config and exit\n"
            )
            print("Options:")
            print(schema_help(schema))
            return None
        cfg = load_config(schema, [str(p) for p in config_paths], overrides)
        if flags.get("print_config"):
            print(config_to_yaml(cfg), end="")
            return None
        run_dir = make_run_dir(cfg.output_dir, name)
        cfg.output_dir = str(run_dir)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        run(cfg, run_dir)
        return None

    command.__name__ = name.replace("-", "_")
    command.__doc__ = doc
    return command


def run_cli(command: Callable[..., None], *, name: str, argv: list[str] | None = None) -> None:
    """Console-script body: run ``command`` under Fire; config errors exit 2 with one message."""
    import fire

    try:
        fire.Fire(command, command=argv, name=name)
    except ConfigError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
