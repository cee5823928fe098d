"""Command-line options generated from the config dataclasses, and `--config FILE`.

Each option named after a config field takes its flag from the field's name, its type and range from the field's
annotation and metadata (`clear_sae.config`), its default from the field's default and its help from the docstring
written under the field, so nothing is written twice. `--config FILE` reads a JSON or YAML mapping of the same
names (dashes or underscores) as defaults that flags on the command line override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from clear_sae.backbones import MODEL_DTYPES, Placement
from clear_sae.config import CHECK, MAXIMUM, check_value, field_docs
from clear_sae.errors import ClearSaeError

log = logging.getLogger("clear_sae")


def flag_of(name: str) -> str:
    """The flag of a field: `--batch-size` for `batch_size`."""
    return "--" + name.replace("_", "-")


def number_type(base: type, check: str | None, maximum: int | float | None = None) -> Callable[[str], Any]:
    """An argparse type reading an int or float and checking it against the field's range and largest value."""

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if base is int else 'a number'}") from None
        if check is None:
            return value
        try:
            return check_value(value, check, maximum)
        except ClearSaeError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = base.__name__
    return parse


def list_type(base: type) -> Callable[[str], tuple[Any, ...]]:
    """An argparse type reading a comma-separated list, e.g. `1,2,4`."""

    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(base(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {base.__name__}") from None

    parse.__name__ = "list"
    return parse


def _plain(annotation: Any) -> Any:
    """`int` for `int | None`; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: list[str],
    *,
    flags: dict[str, str] | None = None,
    choices: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one option per named field of config dataclass `cls` (its dest is the field's name). `flags` renames
    an option (`{"architecture": "--arch"}`), `choices` limits its values, `defaults` replaces a field default
    where the command's own default differs (the demo's)."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    docs = field_docs(cls)
    for name in names:
        f = by_name[name]
        annotation = _plain(hints[name])
        default = (defaults or {}).get(name, field_default(f))
        doc = docs.get(name, "").replace("%", "%%")
        limit = f"at most {f.metadata[MAXIMUM]:,}; " if MAXIMUM in f.metadata else ""
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": f"{doc} ({limit}default: %(default)s)"}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is tuple:
            kwargs["type"] = list_type(typing.get_args(annotation)[0])
            kwargs["default"] = default
            shown = (
                "none" if default is None else ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            )
            kwargs["help"] = f"{doc} Comma-separated. (default: {shown})"
        elif annotation in (int, float):
            kwargs["type"] = number_type(annotation, f.metadata.get(CHECK), f.metadata.get(MAXIMUM))
        elif annotation is Path:
            kwargs["type"] = Path
        if choices and name in choices:
            kwargs["choices"] = list(choices[name])
        parser.add_argument((flags or {}).get(name, flag_of(name)), **kwargs)


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--model-dtype`: where the command runs the model, in which precision."""
    add_fields(parser, Placement, PLACEMENT_FIELDS, choices={"model_dtype": MODEL_DTYPES})


def placement_from(args: argparse.Namespace) -> Placement:
    """The `Placement` of `--device` and `--model-dtype`."""
    return config_from(Placement, args, PLACEMENT_FIELDS)


PLACEMENT_FIELDS = ["device", "model_dtype"]


def config_from(cls: type, args: argparse.Namespace, names: list[str], **given: Any) -> Any:
    """The config `cls` built from the parsed options of `names`, plus `given` values."""
    return cls(**{name: getattr(args, name) for name in names}, **given)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON (`.json`) or YAML file of option values, keys with dashes or underscores."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise ClearSaeError(f"--config {path} {state}; pass a JSON or YAML file of option values")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ClearSaeError(f"--config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClearSaeError(f"--config {path} must hold a mapping of option names to values, not {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def apply_config_file(command: argparse.ArgumentParser, name: str, path: str | Path) -> None:
    """Make the values in config file `path` the defaults of subcommand `name`'s options, each checked as its
    flag would be; an option the file sets is no longer required on the command line."""
    actions = {a.dest: a for a in command._actions if a.dest not in ("help", "config") and a.option_strings}
    for key, value in read_config_file(path).items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(k.replace("_", "-") for k in actions))
            raise ClearSaeError(f"--config {path}: `clear-sae {name}` has no option {key!r}; it takes: {known}")
        try:
            value = _converted(action, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            raise ClearSaeError(f"--config {path}: {key}: {err}") from None
        if action.choices is not None and value not in action.choices:
            raise ClearSaeError(f"--config {path}: {key} must be one of {', '.join(map(str, action.choices))}")
        command.set_defaults(**{key: value})
        action.required = False


def _converted(action: argparse.Action, value: Any) -> Any:
    """A config file's value as the option's own parser would give it."""
    convert = action.type if callable(action.type) else str
    if isinstance(action, argparse._AppendAction):
        return [convert(str(v)) for v in (value if isinstance(value, list) else [value])]
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction)):
        if not isinstance(value, bool):
            raise TypeError(f"{value!r} is not true or false")
        return value
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return convert(str(value)) if value is not None else value


def configure_logging(verbosity: int) -> None:
    """Status lines go to standard output as plain lines: warnings only at -1 (`--quiet`), INFO at 0, DEBUG at 1."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
