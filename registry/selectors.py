"""Kubernetes label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`).

`parse_selector` is a pure function returning a frozen `Selector`; lists apply it in Python after the
SQL query. Invalid syntax raises `BadRequest`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hawser.errors import BadRequest

Operator = Literal["eq", "ne", "exists", "absent", "in", "notin"]

_KEY = r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*")
_EQ = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*")
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")
_VALUE_ONLY = re.compile(_VALUE)


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return value is not None
            case "absent":
                return value is None
            case "eq" | "in":
                return value is not None and value in self.values
            case "ne" | "notin":
                return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"invalid label selector {text!r}: unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise BadRequest(f"invalid label selector {text!r}: unbalanced '('")
    parts.append("".join(current))
    return parts


def _requirement(part: str, text: str) -> Requirement:
    if m := _SET.fullmatch(part):
        values = [v.strip() for v in m.group(4).split(",")]
        if not all(values) or not all(_VALUE_ONLY.fullmatch(v) for v in values):
            raise BadRequest(f"invalid label selector {text!r}: bad value list in {part.strip()!r}")
        op: Operator = "in" if m.group(3) == "in" else "notin"
        return Requirement(m.group(1), op, frozenset(values))
    if m := _EQ.fullmatch(part):
        return Requirement(m.group(1), "ne" if m.group(3) == "!=" else "eq", frozenset([m.group(4)]))
    if m := _EXISTS.fullmatch(part):
        return Requirement(m.group(2), "absent" if m.group(1) else "exists")
    raise BadRequest(f"invalid label selector {text!r}: cannot parse {part.strip()!r}")


def parse_selector(text: str | None) -> Selector:
    """Parse a selector; an empty or missing one matches everything."""
    if text is None or not text.strip():
        return Selector()
    return Selector(tuple(_requirement(part, text) for part in _split(text)))
