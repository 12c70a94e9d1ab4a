"""Which application and device names the registry accepts."""

from __future__ import annotations

import pytest

from hawser.errors import InvalidName
from registry.names import check_application_name, check_device_name


@pytest.mark.parametrize("name", ["a", "app-1", "0", "x" * 63, "a-b-c"])
def test_good_application_names(name: str) -> None:
    assert check_application_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "a b", "ä", "a/b"])
def test_bad_application_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_application_name(name)


@pytest.mark.parametrize("name", ["d", "Device_1", "a.b:c@d", "ümlaut", "x" * 256, "urn:dev:1"])
def test_good_device_names(name: str) -> None:
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "a b", "tab\there", "nl\n", "del\x7f", "x" * 257])
def test_bad_device_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_device_name(name)
