"""`hawser stream`: read an application's events from the WebSocket integration, one JSON line each.

The token travels in the `Authorization` header (never in the URL, where proxies log it). A refused
handshake carries a problem body, shown like any REST error; Ctrl-C ends the stream quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import click
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from hawser._cli_client import CliError, problem_message


def events_url(base: str, application: str, group: str | None) -> str:
    """`http(s)://host/...` → `ws(s)://host/api/integration/v1/apps/<app>/events[?group_id=]`."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise CliError(f"--url must be http(s)://host:port, not {base!r}")
    path = parts.path.rstrip("/") + f"/api/integration/v1/apps/{quote(application, safe='')}/events"
    query = urlencode({"group_id": group}) if group else ""
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def stream(
    base: str,
    token: str | None,
    application: str,
    *,
    group: str | None,
    count: int | None,
    on_event: Callable[[str], None],
    on_open: Callable[[], None],
) -> None:
    """Call `on_event` with each event's JSON until `count` events, the server closes, or cancellation."""
    url = events_url(base, application, group)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with connect(url, additional_headers=headers, max_size=None, open_timeout=30) as ws:
            on_open()
            received = 0
            while count is None or received < count:
                message = await ws.recv()
                on_event(message if isinstance(message, str) else message.decode())
                received += 1
    except InvalidStatus as e:
        response = e.response
        message = problem_message(response.status_code, bytes(response.body or b""),
                                  response.headers.get("content-type", ""))
        if response.status_code == 401 and not token:
            message += " (set HAWSER_TOKEN or pass --token)"
        raise CliError(message) from None
    except ConnectionClosed as e:
        if e.rcvd is not None and e.rcvd.code == 1000:
            return
        why = f"{e.rcvd.code} {e.rcvd.reason}".strip() if e.rcvd else "the connection was lost"
        raise CliError(f"the event stream ended: {why}") from None
    except (InvalidURI, InvalidHandshake) as e:
        raise CliError(f"cannot open the event stream at {url}: {e}") from None
    except (OSError, TimeoutError):
        raise CliError(f"cannot reach Hawser at {base}") from None


def print_line(line: str) -> None:
    click.echo(line)


def run_stream(base: str, token: str | None, application: str, *, group: str | None, count: int | None,
               on_open: Callable[[], None]) -> None:
    """Blocking entry point for the command: Ctrl-C ends it quietly."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(stream(base, token, application, group=group, count=count, on_event=print_line,
                           on_open=on_open))
