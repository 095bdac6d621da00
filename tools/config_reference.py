"""Print the configuration reference (every key, default, secret or not) as Markdown.

The README embeds this table between markers; a test keeps the two identical:

    python -m tools.config_reference            # print the table
    python -m tools.config_reference --write    # refresh README.md in place
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _models(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        return " \\| ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in values)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (Union, types.UnionType):
        return _type_name(args[0])
    if annotation is SecretStr:
        return "string"
    name = getattr(annotation, "__name__", str(annotation))
    return name.replace("str", "string").replace("float", "number")


def _shown(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return ""
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


#: A field's `json_schema_extra` key naming the switch that makes it required (settings/swarm.py).
REQUIRED_WITH = "requiredWith"


def rows(
    model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None, condition: str | None = None,
) -> Iterator[tuple[str, str, str, str]]:
    """One row per key: (key, type, default, secret).

    The default column says what happens when the stack file leaves the key out:
    a value (what it then is), empty (unset: the feature is off or derived), `required`
    (every stack must set it) or "required with `x`" (must be set whenever the object
    `x` is). A key's default comes from the enclosing object's default when it has one
    (`app.limits` defaults to 512 MiB / 1 CPU although `Limits` itself has no defaults),
    which is how the models fill a partly set object (`settings.base.Model._keep_nested_defaults`).
    """
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        if defaults is not None:
            has_default, value = True, getattr(defaults, name)
        elif field.is_required():
            has_default, value = False, None
        else:
            has_default, value = True, field.get_default(call_default_factory=True)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if REQUIRED_WITH in extra:  # optional, but required once the switch it names is on
            default = f"required with `{extra[REQUIRED_WITH]}`"
        elif has_default:
            default = "" if isinstance(value, BaseModel) else _shown(value)
        else:
            default = "required" if condition is None else f"required with `{condition}`"
        nested = _models(field.annotation)
        if nested:
            yield key, "object", default, ""
            inner_defaults = value if isinstance(value, BaseModel) else None
            # Inside an object that may be left out, "required" holds only once it is set.
            inner_condition = key if has_default and inner_defaults is None else condition
            for sub in nested:
                yield from rows(sub, f"{key}.", inner_defaults, inner_condition)
            continue
        secret = "yes" if _is_secret(field.annotation) else ""
        yield key, _type_name(field.annotation), default, secret


def table() -> str:
    from settings import PROJECT, Settings

    lines = [
        f"| key (`{PROJECT}:` namespace) | type | default | secret |",
        "| --- | --- | --- | --- |",
    ]
    for key, kind, default, secret in rows(Settings):
        lines.append(f"| `{key}` | {kind} | {default} | {secret} |")
    return "\n".join(lines) + "\n"


def embed(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.config_reference",
        description="Print the configuration reference (every key of the paper-trading: namespace, its type, "
                    "default and whether it is a secret) as a Markdown table, or refresh README.md with it.",
    )
    parser.add_argument("--write", action="store_true",
                        help="replace the table between the markers in README.md")
    args = parser.parse_args(argv)
    if args.write:
        path = ROOT / "README.md"
        path.write_text(embed(path.read_text()))
        return 0
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
