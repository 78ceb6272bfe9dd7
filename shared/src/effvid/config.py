"""Typed configuration: YAML files merged left to right, then dotted overrides, onto a schema.

Every command of every effvid package declares its options as a tree of dataclasses and calls
:func:`load_config`. The merge itself is OmegaConf's (structured configs in struct mode); this
module adds what OmegaConf leaves to the caller:

* errors name the source (YAML file or command line), the full dotted key and what was expected,
  and an unknown key suggests the close matches among *full* paths, so ``--num_class`` (a bare
  leaf) is rejected with "did you mean 'model.num_class'" instead of silently updating every
  nested ``num_class`` as the original FrameExit/Delta-Distillation configs did;
* values are coerced to the schema type, so ``--data.path_frame 2021`` (which Fire hands over as
  the int 2021) becomes the string ``"2021"``;
* ``--help`` text listing every option with its type, default and one-line doc.

Field docs live in the dataclass field metadata; :func:`option` is a shorthand for that.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

__all__ = [
    "MISSING",
    "ConfigError",
    "RunConfig",
    "check_choice",
    "config_paths_of",
    "config_to_yaml",
    "load_config",
    "option",
    "plain_doc",
    "schema_defaults_yaml",
    "schema_help",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file, key or value does not fit the command's schema."""


def option(default: Any = MISSING, doc: str = "", *, default_factory: Any = None) -> Any:
    """A dataclass field with a one-line ``doc`` shown by ``--help``.

    Mutable defaults (lists, nested dataclasses) go through ``default_factory``.
    """
    metadata = {"doc": doc}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(key: str, value: object, choices: Sequence[object]) -> None:
    """Raise ``ValueError("<key> must be one of ...")`` unless ``value`` is in ``choices``.

    A schema's ``__post_init__`` calls it, so a bad fixed-choice value is a one-line
    configuration error when the config loads, like an unknown key.
    """
    if value not in choices:
        names = ", ".join(str(c) for c in choices)
        raise ValueError(f"{key} must be one of {names}; got {value!r}")


@dataclasses.dataclass
class RunConfig:
    """Fields every command has. Command schemas subclass this."""

    output_dir: str | None = option(
        None, "run directory for outputs; default: a new timestamped folder under runs/"
    )


# ----------------------------------------------------------------------------- schema walking


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_type(schema: type, f: dataclasses.Field[Any]) -> Any:
    hints = typing.get_type_hints(schema)
    return hints.get(f.name, f.type)


def config_paths_of(schema: type) -> list[str]:
    """Every full dotted key of a dataclass schema, nested sections included."""
    paths: list[str] = []

    def walk(tp: type, prefix: str) -> None:
        for f in dataclasses.fields(tp):
            key = f"{prefix}{f.name}"
            paths.append(key)
            ftype = _field_type(tp, f)
            if _is_dataclass_type(ftype):
                walk(ftype, key + ".")

    walk(schema, "")
    return paths


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " | ".join(_type_name(a) for a in args)
        return f"{inner} | None" if len(args) < len(typing.get_args(tp)) else inner
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def plain_doc(doc: str) -> str:
    """Docs are written for Sphinx too; the terminal shows ``x`` as x."""
    return re.sub(r"``([^`]+)``", r"\1", doc)


def _default_text(f: dataclasses.Field[Any], section: Any = None) -> str:
    """How help shows a field's default; ``section``: the instance the parent's default factory
    makes (a command may ship other defaults for a section than the section's class has)."""
    if section is not None:
        value = getattr(section, f.name)
    elif f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return "(required)" if value == MISSING else f"(default: {value!r})"


def schema_help(schema: type) -> str:
    """``--full.key  TYPE  (default: X)  doc`` per option: the command's own options first, then
    one headed block per section (nested sections after their parent's options)."""
    lines: list[str] = []

    def walk(tp: type, prefix: str, instance: Any) -> None:
        leaves, sections = [], []
        for f in dataclasses.fields(tp):
            (sections if _is_dataclass_type(_field_type(tp, f)) else leaves).append(f)
        for f in leaves:
            doc = plain_doc(f.metadata.get("doc", ""))
            lines.append(
                f"  --{prefix}{f.name}  {_type_name(_field_type(tp, f))}  {_default_text(f, instance)}"
                + (f"  {doc}" if doc else "")
            )
        for f in sections:
            doc = plain_doc(f.metadata.get("doc", ""))
            lines.append(f"\n[{prefix}{f.name}]" + (f"  {doc}" if doc else ""))
            if instance is not None:
                child = getattr(instance, f.name)
            elif f.default_factory is not dataclasses.MISSING:
                child = f.default_factory()
            else:
                child = None
            walk(_field_type(tp, f), f"{prefix}{f.name}.", child)

    lines.append("Options:")
    walk(schema, "", None)
    return "\n".join(lines)


def schema_defaults_yaml(schema: type) -> str:
    """The schema's defaults as YAML; required keys show as ``???`` (not set)."""
    return OmegaConf.to_yaml(OmegaConf.structured(schema))


# ----------------------------------------------------------------------------- errors


def _suggest(key: str, paths: Sequence[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [p for p in paths if p.rsplit(".", 1)[-1] == leaf and p != key]
    close = difflib.get_close_matches(key, paths, n=3, cutoff=0.6)
    candidates = list(dict.fromkeys(same_leaf + close))[:4]
    if not candidates:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in candidates) + "?"


def _first_line(exc: OmegaConfBaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return msg.splitlines()[0].strip()


def _convert_error(exc: OmegaConfBaseException, source: str, paths: Sequence[str]) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(
            f"required config key '{key}' is not set; give it in a YAML file or as --{key} VALUE"
        )
    if key not in paths:
        return ConfigError(f"{source}: unknown config key '{key}'.{_suggest(key, paths)}")
    return ConfigError(f"{source}: invalid value for '{key}': {_first_line(exc)}")


# ----------------------------------------------------------------------------- loading


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: expected a mapping of config keys at the top level, got {type(data).__name__}"
        )
    return data


_NULLS = ("null", "none", "~")


def _type_at(schema: type, key: str) -> Any:
    tp: Any = schema
    for part in key.split("."):
        f = next(f for f in dataclasses.fields(tp) if f.name == part)
        tp = _field_type(tp, f)
    return tp


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def load_config(
    schema: type[T],
    config_paths: Sequence[str | os.PathLike[str]] = (),
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build a ``schema`` instance from YAML files (merged left to right) and dotted overrides.

    Args:
        schema: a dataclass type; nested sections are dataclass-typed fields.
        config_paths: YAML files; later files override earlier ones key by key.
        overrides: ``{"data.path_frame": value, ...}`` applied last, each by its full path.
            Hyphens in keys are read as underscores (as Fire does).

    Raises:
        ConfigError: a missing/invalid YAML file, an unknown key (with suggestions), a value
            that cannot be coerced to the field's type, or a required key left unset.
    """
    if not _is_dataclass_type(schema):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    paths = config_paths_of(schema)
    cfg: DictConfig = OmegaConf.structured(schema)
    for config_path in config_paths:
        data = _read_yaml(config_path)
        try:
            cfg = OmegaConf.merge(cfg, data)  # type: ignore[assignment]
        except OmegaConfBaseException as exc:
            raise _convert_error(exc, str(config_path), paths) from None
    for raw_key, value in (overrides or {}).items():
        key = raw_key.replace("-", "_")
        if key not in paths:
            raise ConfigError(f"command line: unknown config key '{key}'.{_suggest(key, paths)}")
        if isinstance(value, str) and value.lower() in _NULLS and _is_optional(_type_at(schema, key)):
            value = None  # --checkpoint.init null: the shell has no other way to say None
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as exc:
            raise _convert_error(exc, "command line", paths) from None
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _convert_error(exc, "config", paths) from None
    except (TypeError, ValueError) as exc:  # a schema's own __post_init__ validation
        raise ConfigError(f"invalid config: {exc}") from None


def config_to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what ``--print_config`` prints and runs save)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
