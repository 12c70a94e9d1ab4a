"""Label selectors: parsing and matching from tables."""

from __future__ import annotations

import pytest

from hawser.errors import BadRequest
from registry.selectors import Requirement, parse_selector

LABELS = {"env": "prod", "tier": "edge", "team": "a"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("env=prod", True),
        ("env==prod", True),
        ("env=dev", False),
        ("env!=dev", True),
        ("env!=prod", False),
        ("missing!=x", True),
        ("env", True),
        ("missing", False),
        ("!missing", True),
        ("!env", False),
        ("tier in (edge, core)", True),
        ("tier in (core)", False),
        ("tier notin (core,x)", True),
        ("tier notin (edge)", False),
        ("missing notin (edge)", True),
        ("missing in (edge)", False),
        ("env=prod,tier in (edge,core),!legacy", True),
        ("env=prod, tier=core", False),
        (" env = prod ", True),
        ("example.com/owner", False),
        ("team=", False),  # an empty value is allowed and matches only an empty label
    ],
)
def test_matching(text: str, expected: bool) -> None:
    assert parse_selector(text).matches(LABELS) is expected


def test_parsed_shape() -> None:
    selector = parse_selector("a=1,b in (x,y),!c,d notin (z)")
    assert selector.requirements == (
        Requirement("a", "eq", frozenset({"1"})),
        Requirement("b", "in", frozenset({"x", "y"})),
        Requirement("c", "absent"),
        Requirement("d", "notin", frozenset({"z"})),
    )


@pytest.mark.parametrize(
    "text", ["=x", "a in (x", "a in x)", "a in ()", "a b", "a in (x,,y)", "a=b=c", "!", ",", "a=(x)"]
)
def test_invalid(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_selector(text)
