"""The `hawser` command line against a real `hawser serve`: registry commands through click's runner,
`hawser stream` as its own process, receiving an event a device published over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from queue import Empty, Queue

import httpx
from click.testing import CliRunner, Result

from hawser.cli import main
from tests.cli.conftest import Served, clean_env
from tests.helpers import free_port


def hawser(served: Served, *args: str, token: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--url", served.api_url, "--token", token or served.token, *args])


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def fails(result: Result) -> str:
    """The one-line error of a failed command (and no traceback)."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def test_app_lifecycle(served: Served) -> None:
    app = name("app")
    assert ok(hawser(served, "app", "create", app, "--label", "env=test", "--label", "team=iot")) \
        == f"application {app} created\n"
    lines = ok(hawser(served, "app", "list")).splitlines()
    assert lines[0].split() == ["NAME", "AGE", "LABELS"]
    row = next(line.split() for line in lines if line.startswith(app + " "))
    assert row[0] == app
    assert row[2] == "env=test,team=iot"
    assert row[1].endswith("s")
    selected = ok(hawser(served, "app", "list", "--labels", "env=test"))
    assert app in selected
    assert app not in ok(hawser(served, "app", "list", "--labels", "env=prod"))
    document = json.loads(ok(hawser(served, "app", "get", app)))
    assert document["metadata"]["name"] == app
    assert document["metadata"]["labels"] == {"env": "test", "team": "iot"}
    assert fails(hawser(served, "app", "create", app)).startswith("error: Conflict")
    assert ok(hawser(served, "app", "delete", app)) == f"application {app} deleted\n"
    assert fails(hawser(served, "app", "get", app)).startswith("error: Not Found")


def test_device_lifecycle(served: Served) -> None:
    app = name("app")
    ok(hawser(served, "app", "create", app))
    assert ok(hawser(served, "device", "create", app, "sensor-1", "--password", "hey-rodney",
                     "--alias", "urn:sensor:1", "--label", "room=1")) == f"device sensor-1 created in {app}\n"
    ok(hawser(served, "device", "create", app, "sensor-2", "--username", "u2", "--user-password", "p2",
              "--gateway", "sensor-1", "--disabled", "--psk", "secret-psk", "--ttn-payload", "fields"))
    rows = [line.split()[0] for line in ok(hawser(served, "device", "list", app)).splitlines()]
    assert rows == ["NAME", "sensor-1", "sensor-2"]
    document = json.loads(ok(hawser(served, "device", "get", app, "sensor-2")))
    assert document["metadata"]["application"] == app
    assert document["spec"]["core"]["disabled"] is True
    assert document["spec"]["gatewaySelector"] == {"matchNames": ["sensor-1"]}
    assert document["spec"]["ttn"] == {"payload": "fields"}
    kinds = [next(iter(c)) for c in document["spec"]["authentication"]["credentials"]]
    assert kinds == ["user", "psk"]
    assert "secret-psk" not in json.dumps(document)
    assert "c2VjcmV0LXBzaw" not in json.dumps(document)
    device_json = json.dumps(json.loads(ok(hawser(served, "device", "get", app, "sensor-1"))))
    assert "hey-rodney" not in device_json, "credentials are never shown"
    ok(hawser(served, "device", "delete", app, "sensor-2"))
    assert fails(hawser(served, "device", "get", app, "sensor-2")).startswith("error: Not Found")
    usage = hawser(served, "device", "create", app, "x", "--username", "only")
    assert usage.exit_code == 2


def test_unknown_application(served: Served) -> None:
    message = fails(hawser(served, "device", "create", "no-such-app", "d", "--password", "p"))
    assert message.startswith("error: Not Found: ")
    assert "no-such-app" in message


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["app", "list"], ["stream", "some-app"]):
        result = CliRunner().invoke(main, ["--url", url, "--token", "t", *args])
        assert fails(result) == f"error: cannot reach Hawser at {url}"


def test_missing_token_says_how_to_give_one(served: Served) -> None:
    result = CliRunner().invoke(main, ["--url", served.api_url, "app", "list"], env={"HAWSER_TOKEN": None})
    message = fails(result)
    assert message.startswith("error: Unauthorized")
    assert message.endswith("(set HAWSER_TOKEN or pass --token)")


def test_scoped_token(served: Served) -> None:
    mine, other = name("mine"), name("other")
    ok(hawser(served, "app", "create", mine))
    ok(hawser(served, "app", "create", other))
    result = hawser(served, "token", "create", "--description", "ci", "--scope", mine)
    token = ok(result).strip()
    assert token
    assert "shown this once" in result.stderr
    assert json.loads(ok(hawser(served, "app", "get", mine, token=token)))["metadata"]["name"] == mine
    assert fails(hawser(served, "stream", other, token=token)).startswith("error: Forbidden: ")
    assert fails(hawser(served, "app", "get", other, token=token)).startswith("error: ")


def test_stream_of_an_unknown_application(served: Served) -> None:
    assert fails(hawser(served, "stream", "no-such-app")).startswith("error: Not Found")


def _lines(stream: object, into: Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def test_stream_prints_what_a_device_publishes(served: Served) -> None:
    app = name("app")
    ok(hawser(served, "app", "create", app))
    ok(hawser(served, "device", "create", app, "thermo", "--password", "s3cret"))
    errors: Queue[str] = Queue()
    lines: Queue[str] = Queue()
    with subprocess.Popen(
        [sys.executable, "-m", "hawser.cli", "stream", app, "--count", "2"],
        env=clean_env(HAWSER_URL=served.api_url, HAWSER_TOKEN=served.token),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        readers = [threading.Thread(target=_lines, args=(process.stderr, errors)),
                   threading.Thread(target=_lines, args=(process.stdout, lines))]
        for reader in readers:
            reader.start()
        try:
            try:
                opened = errors.get(timeout=30)
            except Empty:
                raise AssertionError("hawser stream did not connect") from None
            assert opened.startswith(f"streaming the events of {app}"), opened
            with httpx.Client(base_url=served.http_url, auth=(f"thermo@{app}", "s3cret")) as device:
                for temp in (21, 22):
                    reply = device.post("/v1/temperature", json={"temp": temp})
                    assert reply.status_code == 202, reply.text
            out = [lines.get(timeout=30) for _ in range(2)]
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            for reader in readers:
                reader.join(10)
    assert process.returncode == 0
    events = [json.loads(line) for line in out]
    assert [e["data"] for e in events] == [{"temp": 21}, {"temp": 22}]
    assert {(e["application"], e["device"], e["subject"]) for e in events} == {(app, "thermo", "temperature")}


def test_mosquitto_clients_against_hawser_serve(served: Served) -> None:
    """The README's MQTT walk-through against the real `hawser serve` (uvloop, every service)."""
    app = name("app")
    ok(hawser(served, "app", "create", app))
    ok(hawser(served, "device", "create", app, "thermo", "--password", "s3cret"))
    with subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(served.mqtt_integration_port), "-V", "mqttv5",
         "-u", served.token, "-t", f"app/{app}", "-C", "3", "-W", "30", "-F", "%p"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as subscriber:
        try:
            received: list[str] = []
            deadline = time.monotonic() + 30
            # mosquitto_sub has no readiness signal: publish until it has seen three events and exited
            # (each mosquitto_pub is connected, data, disconnected: any three in a row hold the data).
            while subscriber.poll() is None and time.monotonic() < deadline:
                published = subprocess.run(
                    ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(served.mqtt_port), "-V", "mqttv311", "-q", "1",
                     "-u", f"thermo@{app}", "-P", "s3cret", "-t", "temperature", "-m", '{"temp": 21}'],
                    capture_output=True, text=True, timeout=30, check=False,
                )
                assert published.returncode == 0, published.stderr
                time.sleep(0.2)  # pacing only; the loop ends when the subscriber exits
            out, err = subscriber.communicate(timeout=30)
            received = out.splitlines()
        finally:
            if subscriber.poll() is None:
                subscriber.kill()
                subscriber.wait()
    assert subscriber.returncode == 0, err
    # Each mosquitto_pub connects, publishes and disconnects: connection events and data interleave.
    assert '{"temp": 21}' in received
    refused = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(served.mqtt_port), "-V", "mqttv5", "-q", "1",
         "-u", f"thermo@{app}", "-P", "wrong", "-t", "temperature", "-m", "x"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert refused.returncode != 0
    assert "bad user name or password" in refused.stderr.lower(), refused.stderr


def test_ctrl_c_ends_the_stream_quietly(served: Served) -> None:
    app = name("app")
    ok(hawser(served, "app", "create", app))
    with subprocess.Popen(
        [sys.executable, "-m", "hawser.cli", "stream", app],
        env=clean_env(HAWSER_URL=served.api_url, HAWSER_TOKEN=served.token),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        assert process.stderr is not None
        try:
            assert process.stderr.readline().startswith("streaming the events of"), "connected"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    assert process.returncode == 0
    assert (out, err) == ("", "")


def test_stream_refuses_count_with_a_group(served: Served) -> None:
    """The server commits what it wrote to the socket, so a group would skip what --count left unread."""
    result = hawser(served, "stream", "any-app", "--group", "g", "--count", "5")
    assert result.exit_code == 2, (result.stdout, result.stderr)  # a usage error, before connecting
    assert "--count cannot be combined with --group" in result.stderr
