"""Print the configuration reference (every key, default, secret or not) as Markdown.

The README embeds this table between markers; a test keeps the two identical:

    python -m tools.config_reference            # print the table
    python -m tools.config_reference --write    # refresh README.md in place
"""

from __future__ import annotations

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


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        nested = _models(field.annotation)
        if nested:
            yield key, "object", "required" if field.is_required() else "", ""
            for sub in nested:
                yield from rows(sub, f"{key}.")
            continue
        if field.is_required():
            default = "required"
        elif field.default is PydanticUndefined or field.default is None:
            default = ""
        else:
            value = field.default
            default = f"`{str(value).lower() if isinstance(value, bool) else value}`"
        secret = "yes" if _is_secret(field.annotation) else ""
        yield key, _type_name(field.annotation), default, secret


def table() -> str:
    from components.config import PROJECT, Settings

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


def main(argv: list[str]) -> int:
    if "--write" in argv:
        path = ROOT / "README.md"
        path.write_text(embed(path.read_text()))
        return 0
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
