"""The `hawser` command line's side of the REST API: requests, error messages, tables.

Every failure becomes a `CliError` whose message is what the user reads (`error: <title>: <detail>`
for a problem reply, `error: cannot reach Hawser at <url>` when nothing answers); the command line
never shows a traceback. The REST shapes relied on are DESIGN.md's "Management" documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
import httpx

REGISTRY = "/api/registry/v1alpha1"
TOKENS = "/api/tokens/v1alpha1"
TIMEOUT_S = 30.0


class CliError(click.ClickException):
    """A failure told to the user as one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def problem_message(status: int, body: bytes, content_type: str) -> str:
    """`<title>: <detail>` from an RFC 9457 body; the status and a short excerpt otherwise."""
    if "json" in content_type:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("title"):
            title, detail = str(doc["title"]), doc.get("detail")
            return f"{title}: {detail}" if detail else title
    text = body.decode(errors="replace").strip()[:200]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


class Api:
    """A small synchronous client of one Hawser API endpoint."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token or None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S)

    def close(self) -> None:
        self._client.close()

    def request(
        self, method: str, path: str, *, body: object = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """Send one request; return the decoded JSON reply (None when empty) or raise `CliError`."""
        try:
            response = self._client.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            raise CliError(f"cannot reach Hawser at {self.url}") from None
        except httpx.TransportError as e:
            raise CliError(f"Hawser at {self.url} did not answer: {e.__class__.__name__}") from None
        if response.is_error:
            message = problem_message(
                response.status_code, response.content, response.headers.get("content-type", "")
            )
            if response.status_code == 401 and not self.token:
                message += " (set HAWSER_TOKEN or pass --token)"
            raise CliError(message)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"Hawser at {self.url} sent a reply that is not JSON") from None


def items_of(reply: Any) -> list[dict[str, Any]]:
    """A list reply: a bare JSON array (Drogue) or `{"items": [...]}`."""
    if isinstance(reply, dict):
        reply = reply.get("items", [])
    if not isinstance(reply, list):
        raise CliError("unexpected list reply from Hawser")
    return [item for item in reply if isinstance(item, dict)]


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--label")
        labels[key] = value
    return labels


def age(timestamp: object, now: datetime | None = None) -> str:
    """kubectl style: `42s`, `5m`, `3h`, `12d`; `-` when unknown."""
    if not isinstance(timestamp, str):
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def resource_rows(items: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[list[str]]:
    """NAME, AGE, LABELS of registry documents."""
    rows = []
    for item in items:
        metadata = item.get("metadata") or {}
        labels = metadata.get("labels") or {}
        rows.append([
            str(metadata.get("name", "?")),
            age(metadata.get("creationTimestamp"), now),
            ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-",
        ])
    return rows


def dumps(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)
