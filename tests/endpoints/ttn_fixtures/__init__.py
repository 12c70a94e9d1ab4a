"""Real-shaped TTN webhook documents (TTN's published JSON formats) and helpers to vary them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
#: The end device id every fixture names.
DEVICE = "weather-station-1"
#: Marks a field to remove in `varied`.
DELETE = object()


def load(name: str) -> bytes:
    """The fixture `name` (without `.json`), byte for byte."""
    return (HERE / f"{name}.json").read_bytes()


def varied(name: str, *changes: tuple[tuple[str | int, ...], Any]) -> bytes:
    """The fixture with each `(path, value)` set (or removed with `DELETE`), as compact JSON."""
    document = json.loads(load(name))
    for path, value in changes:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return json.dumps(document).encode()


def for_device(body: bytes, device: str) -> bytes:
    """The same document about another end device (only the id changes, byte for byte)."""
    return body.replace(json.dumps(DEVICE).encode(), json.dumps(device).encode())
