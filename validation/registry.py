"""The check declaration: what a check is, the `@check` decorator, and the list it fills.

The `checks_*` modules import this module (and `validation.context`), never the runner;
the runner imports every `checks_*` module, so the list is complete once the runner is loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from validation.context import Context, Passed
from validation.models import BLOCKING, Category
from validation.options import ValidationOptions

CheckFn = Callable[[Context], Awaitable[Passed]]
SkipRule = Callable[[ValidationOptions], str | None]


@dataclass(frozen=True)
class Check:
    name: str
    category: Category
    description: str
    fn: CheckFn
    skip_when: SkipRule | None = None

    @property
    def blocking(self) -> bool:
        return BLOCKING[self.category]


#: Every declared check, in import order (the runner orders them by category).
REGISTRY: list[Check] = []


def check(
    name: str, category: Category, description: str, skip_when: SkipRule | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Register a check; `skip_when(options)` returns a reason to skip, or None."""

    def register(fn: CheckFn) -> CheckFn:
        REGISTRY.append(Check(name, category, description, fn, skip_when))
        return fn

    return register
