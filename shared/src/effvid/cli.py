"""Fire entry points shared by every effvid command.

A command is a function ``run(cfg, run_dir)`` plus its schema. :func:`build_command` turns it
into the Fire-facing ``fn(*config_paths, **overrides)``, whose ``main()`` is the console script::

    frameexit-infer a.yml b.yml --data.path_frame X --model.num_class 101

Reserved flags, handled here and never reaching the schema:

* ``--help``: every option, by section, with type, default and one-line doc;
* ``--print_config``: the resolved YAML (defaults where nothing is given) and exit;
* ``--fresh``: (resumable commands) start over; an existing run is moved aside, never deleted;
* ``--debug``: show the traceback behind an error.

Run directories. A command that writes a run (not the tools that write their own outputs)
writes into ``cfg.output_dir`` (default: a new ``runs/<command>-<timestamp>``), starting with
``config.yaml`` - the resolved config, with the command named in its first line. A directory
holding another command's run is refused. A resumable (training) command pointed at its own
run continues it, and refuses a changed setting (naming the keys) unless it is one of
:data:`RESUME_SAFE` or ``--fresh`` is given; ``config.yaml`` then records what runs now. A run that
fails before writing anything but its ``config.yaml`` removes its directory.

Errors: configuration errors exit 2, data/model-file/training errors exit 1, each with one
``<command>: error: ...`` line (the traceback with ``--debug``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from effvid.config import (
    ConfigError,
    RunConfig,
    config_to_yaml,
    load_config,
    plain_doc,
    schema_defaults_yaml,
    schema_help,
)
from effvid.io import atomic_write_text

__all__ = [
    "RESUME_SAFE",
    "RunDirError",
    "build_command",
    "make_run_dir",
    "package_configs",
    "resolve_config",
    "run_cli",
]

C = TypeVar("C", bound=RunConfig)

_RESERVED = ("help", "print_config", "fresh", "debug")
_HEADER = "# effvid command: "

#: settings a resumed training run may change: where things are and how much is shown, never what is learned
RESUME_SAFE = frozenset(
    {
        "output_dir",
        "engine.epochs",
        "engine.progress",
        "engine.log_every",
        "engine.checkpoint_every",
        "engine.keep_checkpoints",
        "engine.device",
        "engine.backend",
        "engine.nproc_per_node",
        "data.path_frame",
        "data.num_workers",
        "data.lmdb_readahead",
    }
)


class RunDirError(ConfigError):
    """The output directory holds a run that this command must not overwrite or resume."""


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


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return {k.rstrip("."): v for k, v in out.items()}


def changed_keys(old_yaml: str, new_yaml: str, *, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    old, new = _flatten(yaml.safe_load(old_yaml) or {}), _flatten(yaml.safe_load(new_yaml) or {})
    skip = set(ignore)
    return sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))


def _existing_command(config_file: Path) -> str | None:
    first = config_file.read_text(encoding="utf-8").split("\n", 1)[0]
    return first[len(_HEADER) :].strip() if first.startswith(_HEADER) else None


def _claim_run_dir(run_dir: Path, name: str, text: str, *, resumable: bool, fresh: bool) -> None:
    """Check an existing ``run_dir`` may take this run (see the module docstring)."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return
    previous = _existing_command(config_file)
    if previous != name:
        raise RunDirError(
            f"{run_dir} holds a run of '{previous or 'an unknown command'}'; refusing to overwrite it "
            f"(choose another --output_dir)"
        )
    if not resumable:
        return
    if fresh:
        aside = run_dir.with_name(f"{run_dir.name}.old-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        run_dir.mkdir()
        print(f"{name}: --fresh: moved the previous run to {aside}")
        return
    changed = changed_keys(config_file.read_text(encoding="utf-8"), text, ignore=RESUME_SAFE)
    if changed:
        raise RunDirError(
            f"{run_dir} holds a run with other settings ({', '.join(changed)} changed); resuming it with "
            "them would mix two runs. Keep them, choose another --output_dir, or pass --fresh to start over"
        )


def shipped_configs(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(config_dir).glob("*.yml"))


def resolve_config(arg: str, config_dir: Path | None) -> str:
    """A YAML path as given, or the name of a shipped config."""
    if Path(arg).is_file() or config_dir is None:
        return arg
    for candidate in (Path(config_dir) / arg, Path(config_dir) / f"{arg}.yml"):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(
        f"config file not found: {arg} (neither a file nor a shipped config; shipped: "
        f"{', '.join(shipped_configs(config_dir)) or 'none'})"
    )


def package_configs(package: str) -> Path:
    """Where a method package's shipped configs are: ``<package>/configs`` inside the installed
    package (wheels include them), or ``packages/<name>/configs`` in a source checkout."""
    import importlib.resources

    inside = Path(str(importlib.resources.files(package))) / "configs"
    if inside.is_dir():
        return inside
    return Path(str(importlib.resources.files(package))).parents[1] / "configs"


def build_command(
    run: Callable[[C, Path], Any],
    schema: type[C],
    *,
    name: str,
    doc: str,
    run_dir: bool = True,
    resumable: bool = False,
    config_dir: Path | None = None,
) -> Callable[..., None]:
    """Wrap ``run(cfg, run_dir)`` as a Fire command ``fn(*config_paths, **overrides)``.

    Args:
        run: the command body; receives the resolved config and the run directory (None when
            ``run_dir`` is False).
        schema: a dataclass; a subclass of :class:`~effvid.config.RunConfig` when ``run_dir``.
        name: the console-script name (used in help text and default run-dir names).
        doc: one paragraph describing the command, shown by ``--help``.
        run_dir: whether the command writes a run directory (tools writing their own outputs: no).
        resumable: a training command whose existing run directory is continued.
        config_dir: the package's shipped configs: a positional that is not a file is looked up
            there by name (``frameexit-infer activitynet`` reads ``<config_dir>/activitynet.yml``).

    The returned function has ``main(argv=None)``, the console-script entry point.
    """
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"{name}: schema must be a dataclass, got {schema!r}")
    if run_dir and not issubclass(schema, RunConfig):
        raise TypeError(f"{name}: a command writing a run directory needs a schema subclassing RunConfig")

    def command(*config_args: str, **overrides: Any) -> None:
        flags = {k: overrides.pop(k) for k in _RESERVED if k in overrides}
        config_paths = [resolve_config(str(a), config_dir) for a in config_args]
        if flags.get("help"):
            print(f"usage: {name} [CONFIG.yml ...] [--section.key VALUE ...]\n\n{plain_doc(doc)}\n")
            if config_dir is not None:
                shipped = ", ".join(shipped_configs(config_dir)) or "none"
                print(f"Shipped configs (give the name instead of a path): {shipped}\n")
            extra = "\n  --fresh  start over: move an existing run in --output_dir aside" if resumable else ""
            print(
                "Reserved flags:\n  --help  print this text\n  --print_config  print the resolved config and exit"
                f"{extra}\n  --debug  show the traceback behind an error\n"
            )
            print(schema_help(schema))
            return None
        if flags.get("print_config"):
            if not config_paths and not overrides:
                print(schema_defaults_yaml(schema), end="")
                return None
            print(config_to_yaml(load_config(schema, [str(p) for p in config_paths], overrides)), end="")
            return None
        cfg = load_config(schema, [str(p) for p in config_paths], overrides)
        if not run_dir:
            run(cfg, None)  # type: ignore[arg-type]
            return None
        fresh_dir = not (cfg.output_dir and Path(cfg.output_dir, "config.yaml").exists())
        new_root = cfg.output_dir is None and not Path("runs").exists()
        folder = make_run_dir(cfg.output_dir, name)
        cfg.output_dir = str(folder)
        text = config_to_yaml(cfg)
        _claim_run_dir(folder, name, text, resumable=resumable, fresh=bool(flags.get("fresh")))
        atomic_write_text(folder / "config.yaml", f"{_HEADER}{name}\n{text}")
        try:
            run(cfg, folder)
        except BaseException:
            # a run that failed before writing anything of its own leaves no directory behind
            if fresh_dir and [p.name for p in folder.iterdir()] == ["config.yaml"]:
                shutil.rmtree(folder, ignore_errors=True)
                if new_root and not any(folder.parent.iterdir()):
                    folder.parent.rmdir()  # the runs/ folder this run created
            raise
        return None

    command.__name__ = name.replace("-", "_")
    command.__doc__ = doc
    command.main = lambda argv=None: run_cli(command, name=name, argv=argv)  # type: ignore[attr-defined]
    return command


#: errors reported as one line with exit status 1 (the data, model-file and training errors)
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError,)


def _user_errors() -> tuple[type[BaseException], ...]:
    from effvid.checkpoint import CheckpointMismatchError
    from effvid.data.errors import DataError
    from effvid.engine.handlers import NonFiniteError
    from effvid.model_files import ModelFileError

    return (
        *USER_ERRORS,
        DataError,
        ModelFileError,
        CheckpointMismatchError,
        NonFiniteError,
        FloatingPointError,
    )


def run_cli(command: Callable[..., None], *, name: str, argv: list[str] | None = None) -> None:
    """Console-script body: run ``command`` under Fire; errors exit with one ``error:`` line."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        fire.Fire(command, command=args, name=name)
    except ConfigError as exc:
        if debug:
            traceback.print_exc()
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except _user_errors() as exc:
        if debug:
            traceback.print_exc()
        message = str(exc).strip() or type(exc).__name__
        print(f"{name}: error: {message}", file=sys.stderr)
        if not debug:
            print(f"{name}: (run again with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
