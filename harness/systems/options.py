"""A system's options: what `--set KEY=VALUE` (or a run file's `[system]`
table) may say, checked and converted before anything starts.

A system declares its options once, in one of two ways:

- the keyword parameters of its constructor, with defaults and type hints
  (`def __init__(self, serializable_reads: bool = False)`): the simple way;
- an `Options` dataclass on the class, whose fields (type hints, defaults,
  and `metadata={"help": ..., "choices": ...}`) are the options; the
  constructor then takes them as keyword arguments. kvnode's adapter derives
  its `Options` from the node's own settings, so that each setting's values
  and defaults are written once.

Values are converted to the declared type: `bool` from true/false/yes/no/1/0,
`int` and `float` from their text, `Literal[...]` or `choices` checked. An
unknown key, a value that does not convert, or a constructor that refuses the
combination (`w` larger than `n`) is an `OptionError` with one line naming
the system and the option.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

__all__ = ["REQUIRED", "Option", "OptionError", "construct", "options_of", "parse"]


class OptionError(ValueError):
    """A bad system option; the message names the system and the option."""


class _Required:
    def __repr__(self) -> str:
        return "(required)"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # bool, int, float, str (or object: taken as given)
    default: Any  # REQUIRED when it has none
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def describe_type(self) -> str:
        if self.choices:
            return " | ".join(str(c) for c in self.choices)
        return getattr(self.type, "__name__", str(self.type))


def options_of(factory: Callable[..., Any]) -> list[Option]:
    """The options a system class (or factory) declares."""
    declared = getattr(factory, "Options", None)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return _dataclass_options(declared)
    return _signature_options(factory)


def _dataclass_options(cls: type) -> list[Option]:
    hints = _hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        kind, choices = _kind(hints.get(f.name, type(default)), default)
        choices = tuple(f.metadata.get("choices", ())) or choices
        out.append(Option(f.name, kind, default, choices, str(f.metadata.get("help", ""))))
    return out


def _signature_options(factory: Callable[..., Any]) -> list[Option]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    hints = _hints(target)
    out: list[Option] = []
    for i, p in enumerate(signature.parameters.values()):
        if isinstance(factory, type) and i == 0:
            continue  # self
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        kind, choices = _kind(hints.get(p.name, type(default) if default is not REQUIRED else str), default)
        out.append(Option(p.name, kind, default, choices))
    return out


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve: fall back to the defaults' types
        return {}


def _kind(hint: Any, default: Any) -> tuple[type, tuple[Any, ...] | None]:
    """(the type values convert to, the allowed values) for a type hint."""
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        return type(choices[0]), choices
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is not None and len(args) == 1:  # X | None, Optional[X]
        return _kind(args[0], default)
    if hint in (bool, int, float, str):
        return hint, None
    if default is not REQUIRED and default is not None and type(default) in (bool, int, float, str):
        return type(default), None
    return object, None


def parse(system: str, options: list[Option], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The options in `raw` (text from the command line, or typed values
    from a TOML file), converted; OptionError for an unknown key or a bad
    value. Options not given are left to the constructor's defaults."""
    by_name = {o.name: o for o in options}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.strip().replace("-", "_")
        option = by_name.get(name)
        if option is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise OptionError(f"{system} has no option {key!r} (its options: {known})")
        out[name] = _convert(system, option, value)
    missing = [o.name for o in options if o.default is REQUIRED and o.name not in out]
    if missing:
        raise OptionError(f"{system} needs --set {missing[0]}=...")
    return out


def _convert(system: str, option: Option, value: Any) -> Any:
    def bad(what: str) -> OptionError:
        return OptionError(f"{system}'s option {option.name}: {value!r} is not {what}")

    kind = option.type
    if value is None:
        converted: Any = None
    elif kind is bool:
        if isinstance(value, bool):
            converted = value
        elif str(value).strip().lower() in ("true", "yes", "on", "1"):
            converted = True
        elif str(value).strip().lower() in ("false", "no", "off", "0"):
            converted = False
        else:
            raise bad("true or false")
    elif kind is int:
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            converted = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise bad("an integer") from None
    elif kind is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            converted = float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    elif kind is str:
        converted = str(value)
    else:
        converted = value
    if option.choices is not None and converted not in option.choices:
        raise OptionError(f"{system}'s option {option.name}: {value!r} is not one of "
                          f"{', '.join(str(c) for c in option.choices)}")
    return converted


def construct(factory: Callable[..., Any], system: str, values: Mapping[str, Any]) -> Any:
    """`factory(**values)`, a refusal (ValueError, TypeError) turned into an
    OptionError naming the system."""
    try:
        return factory(**values)
    except OptionError:
        raise
    except (TypeError, ValueError) as e:
        raise OptionError(f"{system}: {e}") from None
