"""Command-line flags derived from config dataclasses: one source for names, types, help and defaults.

Library configs declare their flags in field metadata (:func:`field_meta`); the commands
(:mod:`facepipe.cli`) add them with :func:`add_config_flags`.

A config field becomes a flag from its annotation and its ``metadata``:

* ``help``: the help text (required: a field without it is not a flag);
* ``flag``: the flag name when it differs from ``--<field-name-with-dashes>``;
* ``default_text``: what to print as the default when the field's default is a placeholder
  resolved later (``None`` meaning "per task" or "the shipped model");
* ``choices``, ``metavar``, ``nargs`` (``"+"`` for list fields) as in argparse.

The help line always ends with the real default, so ``--help`` never prints ``(default: None)``.
Booleans become ``--name`` (store true) when the default is False and ``--no-name`` when it is
True. :func:`config_kwargs` reads the parsed values back into constructor keyword arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["field_meta", "add_config_flags", "config_kwargs", "per_name_default"]


def field_meta(help: str, *, flag: str | None = None, default_text: str | None = None, choices: tuple | list | None = None,
               metavar: str | None = None) -> dict[str, Any]:
    """``metadata`` for a config field that is a command-line flag."""
    meta: dict[str, Any] = {"help": help}
    for key, value in (("flag", flag), ("default_text", default_text), ("choices", choices), ("metavar", metavar)):
        if value is not None:
            meta[key] = value
    return meta


def per_name_default(values: dict[str, Any]) -> str:
    """A default that depends on a choice (task, detector), as help shows it: ``"keypoints 100,
    emotion 40"``, or the one value when every choice has the same (lists space-separated)."""
    shown = {n: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for n, v in values.items()}
    return next(iter(shown.values())) if len(set(shown.values())) == 1 else ", ".join(f"{n} {v}" for n, v in shown.items())


def _base_type(annotation: Any) -> tuple[type, bool]:
    """The scalar type of a field annotation and whether it is a list (``list[int] | None`` → int, True)."""
    if isinstance(annotation, str):  # postponed annotations: resolve the few spellings configs use
        annotation = eval(annotation, {"list": list, "tuple": tuple, "dict": dict, "int": int, "float": float, "str": str, "bool": bool})
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _base_type(args[0])
    if origin in (list, tuple):
        return (args[0] if args else str), True
    return annotation, False


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def add_config_flags(group: argparse._ActionsContainer, cls: type, *, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                     defaults: dict[str, Any] | None = None, default_text: dict[str, str] | None = None) -> list[str]:
    """Add one flag per documented field of dataclass ``cls`` (``only`` those named, in that
    order, when given) to ``group``; the field names added.

    ``defaults`` overrides a field's default for this command; ``default_text`` its shown default.
    """
    defaults = defaults or {}
    default_text = default_text or {}
    hints = typing.get_type_hints(cls)
    added = []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [n for n in (only or ()) if n not in fields or "help" not in fields[n].metadata]
    if missing:
        raise ValueError(f"{cls.__name__} has no documented field {missing}")
    for f in ([fields[n] for n in only] if only is not None else fields.values()):
        if f.name in exclude or "help" not in f.metadata:
            continue
        default = defaults.get(f.name, _default(f))
        shown = default_text.get(f.name) or f.metadata.get("default_text")
        kind, is_list = _base_type(hints.get(f.name, f.type))
        flag = _flag_name(f)
        if kind is bool:
            if default:
                flag = "--no-" + flag[2:]
            group.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", default=bool(default), help=f.metadata["help"])
        else:
            if shown is None:
                shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else ("none" if default is None else str(default))
            kwargs: dict[str, Any] = {"dest": f.name, "default": default, "type": kind, "help": f"{f.metadata['help']} (default: {shown})",
                                      "metavar": flag[2:].replace("-", "_").upper()}
            if is_list:
                kwargs["nargs"] = "+"
            for key in ("choices", "metavar"):
                if key in f.metadata:
                    kwargs[key] = f.metadata[key]
            group.add_argument(flag, **kwargs)
        added.append(f.name)
    return added


def config_kwargs(args: argparse.Namespace, cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from the flags :func:`add_config_flags` added (present ones only)."""
    names = {f.name for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in exclude}
    return {k: v for k, v in vars(args).items() if k in names}
