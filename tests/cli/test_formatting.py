"""The command line's pure helpers: problem messages, tables, ages, the stream URL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import pytest

from hawser._cli_client import CliError, age, items_of, parse_labels, problem_message, resource_rows, table
from hawser._cli_stream import events_url

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_problem_message_uses_title_and_detail() -> None:
    body = b'{"type":"about:blank","title":"Not Found","status":404,"detail":"application \'x\' not found"}'
    assert problem_message(404, body, "application/problem+json") == "Not Found: application 'x' not found"
    assert problem_message(403, b'{"title":"Forbidden"}', "application/problem+json") == "Forbidden"


def test_problem_message_without_a_problem_body() -> None:
    assert problem_message(502, b"<html>bad gateway</html>", "text/html") == "HTTP 502: <html>bad gateway</html>"
    assert problem_message(500, b"", "") == "HTTP 500"
    assert problem_message(500, b"{not json", "application/json") == "HTTP 500: {not json"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [("2025-01-02T03:04:00Z", "5s"), ("2025-01-02T02:00:05+00:00", "1h"), ("2024-12-30T03:04:05Z", "3d"),
     ("2025-01-02T03:00:05Z", "4m"), ("garbage", "-"), (None, "-"), ("2025-01-02T03:04:05", "0s")],
)
def test_age(stamp: object, expected: str) -> None:
    assert age(stamp, NOW) == expected


def test_table_aligns_columns() -> None:
    first = {"name": "a-long-name", "creationTimestamp": "2025-01-02T03:04:00Z", "labels": {"b": "2", "a": "1"}}
    items: list[dict[str, Any]] = [{"metadata": first}, {"metadata": {"name": "x"}}]
    assert table(["NAME", "AGE", "LABELS"], resource_rows(items, NOW)).splitlines() == [
        "NAME          AGE   LABELS",
        "a-long-name   5s    a=1,b=2",
        "x             -     -",
    ]


def test_items_of_accepts_both_list_shapes() -> None:
    assert items_of([{"a": 1}]) == [{"a": 1}]
    assert items_of({"items": [{"a": 1}]}) == [{"a": 1}]
    with pytest.raises(CliError):
        items_of("nope")


def test_labels() -> None:
    assert parse_labels(["a=1", "b=", "c=x=y"]) == {"a": "1", "b": "", "c": "x=y"}
    with pytest.raises(click.BadParameter):
        parse_labels(["novalue"])


def test_events_url() -> None:
    assert events_url("http://h:8081", "my app", None) == "ws://h:8081/api/integration/v1/apps/my%20app/events"
    assert events_url("https://h/base/", "a", "g 1") == "wss://h/base/api/integration/v1/apps/a/events?group_id=g+1"
    with pytest.raises(CliError):
        events_url("ftp://h", "a", None)
