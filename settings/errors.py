"""Pydantic's errors in the stack's words: one line per problem, named by its config path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import PROJECT

_FRIENDLY = {
    "extra_forbidden": "unknown key (is it misspelt?)",
    "missing": "is required",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
}


def describe(error: Mapping[str, Any]) -> str:
    """What is wrong with a value, from one of pydantic's `errors()`."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        if not expected:
            return "has a forbidden value"
        expected = expected.replace("'", "").replace("True", "true").replace("False", "false")
        return f"must be {expected}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return _FRIENDLY.get(kind, str(error["msg"]))


def config_path(loc: tuple[Any, ...]) -> str:
    """`("server", "ssl", "enabled")` -> `server.ssl.enabled`."""
    return ".".join(str(part) for part in loc)


def problem(error: Mapping[str, Any]) -> str:
    """One validation error as `paper-trading:<path>: <what is wrong>`."""
    loc = tuple(error["loc"])
    text = describe(error)
    if error["type"] == "extra_forbidden" and len(loc) == 1 and "." in str(loc[0]):
        # `pulumi config set a.b 1` without --path makes one flat key named "a.b".
        text = f"unknown key; to set a nested key use `pulumi config set --path {loc[0]} ...`"
    nested = re.match(r"^([A-Za-z0-9_.]+): (.*)$", text)
    if error["type"] == "value_error" and nested:
        # A model's own check names the key it is about: `openFilesLimit: must be ...`.
        loc, text = loc + tuple(nested.group(1).split(".")), nested.group(2)
    return f"{PROJECT}:{config_path(loc)}: {text}"
