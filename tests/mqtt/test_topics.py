"""Topic names and filters (MQTT 5 section 4.7): validity tables and matching."""

from __future__ import annotations

import pytest

from hawser.mqtt import ProtocolError, Reason, check_topic_filter, check_topic_name, matches, split_shared


@pytest.mark.parametrize("name", ["a", "a/b", "/", "//", "a//b", "$SYS/x", "caf\u00e9/\u6e29\u5ea6", " ", "x" * 65535])
def test_valid_names(name: str) -> None:
    assert check_topic_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a/+", "a/#", "+", "#", "a+b", "a\x00b", "x" * 65536, "\u00e9" * 32768, "a\ud800"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_topic_name(name)
    assert caught.value.reason is Reason.TOPIC_NAME_INVALID


@pytest.mark.parametrize(
    "text",
    ["a", "#", "+", "a/#", "a/+/b", "+/+", "/+", "+/", "/#", "$share/g/a/#", "$share/g/+", "$share", "$sharex/a",
     "caf\u00e9/+"],
)
def test_valid_filters(text: str) -> None:
    assert check_topic_filter(text) == text


@pytest.mark.parametrize(
    "text",
    ["", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "a\x00", "$share/g", "$share//a", "$share/g/", "$share/g+/a",
     "$share/g#/a", "$share/g/a#", "x" * 65536],
)
def test_invalid_filters(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_topic_filter(text)
    assert caught.value.reason is Reason.TOPIC_FILTER_INVALID


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$share/g/app/x", ("g", "app/x")), ("app/x", (None, "app/x")), ("$share/grp/#", ("grp", "#")),
     ("$sharex/a", (None, "$sharex/a"))],
)
def test_split_shared(text: str, expected: tuple[str | None, str]) -> None:
    assert split_shared(text) == expected


@pytest.mark.parametrize(
    ("topic_filter", "name", "expected"),
    [
        ("a/b", "a/b", True), ("a/b", "a/c", False), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
        ("a/+", "a", False), ("a/+", "a/", True), ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True),
        ("+/+", "/", True), ("+", "/", False), ("/+", "/x", True), ("a/+/c", "a/b/c", True),
        ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("$SYS/+", "$SYS/x", True),
        ("$share/g/app/+", "app/x", True), ("$share/g/app/+", "$share/g/app/x", False),
        ("command/inbox/#", "command/inbox//c", True), ("command/inbox//#", "command/inbox/d/c", False),
    ],
)
def test_matches(topic_filter: str, name: str, expected: bool) -> None:
    assert matches(topic_filter, name) is expected
