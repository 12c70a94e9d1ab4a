"""The `hawser` command line: `serve` runs the services; every other command is a client of the REST
API and the WebSocket integration (never of the database), so it works against any deployment.

`--url` (env `HAWSER_URL`) and `--token` (env `HAWSER_TOKEN`) say where and who. Lists print tables,
`get` prints the JSON document, failures print one `error: ...` line on stderr and exit 1.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, get_args
from urllib.parse import quote

import click

from hawser._cli_client import (
    REGISTRY,
    TOKENS,
    Api,
    CliError,
    dumps,
    items_of,
    parse_labels,
    resource_rows,
    table,
)
from hawser.config import Service

DEFAULT_URL = "http://127.0.0.1:8081"


class _Context:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token

    @contextmanager
    def api(self) -> Iterator[Api]:
        api = Api(self.url, self.token)
        try:
            yield api
        finally:
            api.close()


pass_context = click.make_pass_decorator(_Context)


def _seg(name: str) -> str:
    return quote(name, safe="")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="HAWSER_URL", default=DEFAULT_URL, show_default=True,
              help="Hawser's API endpoint (env HAWSER_URL).")
@click.option("--token", envvar="HAWSER_TOKEN", default=None,
              help="Access token (env HAWSER_TOKEN).")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Hawser, a cloud gateway for IoT devices."""
    ctx.obj = _Context(url, token)


# --- serve ---------------------------------------------------------------------------------------


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(list(get_args(Service))))
def serve(services: tuple[str, ...]) -> None:
    """Run Hawser's services (all of them by default) until SIGINT or SIGTERM.

    Services: http-endpoint (8080), mqtt-endpoint (1883, TLS 8883), api (8081: registry and
    WebSocket integration), mqtt-integration (1884, TLS 8884). Configured from the environment:
    HAWSER_DATA_DIR, HAWSER_BUS__KIND, HAWSER_HTTP__PORT, HAWSER_MQTT__PORT, ...
    """
    from pydantic import ValidationError

    from hawser import server
    from hawser.config import Settings

    try:
        settings = Settings(services=services) if services else Settings()  # type: ignore[arg-type]
    except ValidationError as e:
        raise CliError(f"invalid configuration: {e}") from None
    try:
        server.serve(settings)
    except KeyboardInterrupt:
        pass
    except OSError as e:  # typically: the port is taken
        raise CliError(f"cannot start: {e}") from None


# --- applications --------------------------------------------------------------------------------


@main.group()
def app() -> None:
    """Create, list, show and delete applications."""


@app.command("create")
@click.argument("name")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@pass_context
def app_create(ctx: _Context, name: str, labels: tuple[str, ...]) -> None:
    """Create the application NAME."""
    body = {"metadata": {"name": name, "labels": parse_labels(labels)}, "spec": {}}
    with ctx.api() as api:
        api.request("POST", f"{REGISTRY}/apps", body=body)
    click.echo(f"application {name} created")


@app.command("list")
@click.option("--labels", "selector", default=None, help="Label selector, e.g. 'env=prod,!legacy'.")
@pass_context
def app_list(ctx: _Context, selector: str | None) -> None:
    """List the applications you may see."""
    with ctx.api() as api:
        reply = api.request("GET", f"{REGISTRY}/apps", params={"labels": selector} if selector else None)
    click.echo(table(["NAME", "AGE", "LABELS"], resource_rows(items_of(reply))))


@app.command("get")
@click.argument("name")
@pass_context
def app_get(ctx: _Context, name: str) -> None:
    """Print the application NAME as JSON."""
    with ctx.api() as api:
        click.echo(dumps(api.request("GET", f"{REGISTRY}/apps/{_seg(name)}")))


@app.command("delete")
@click.argument("name")
@pass_context
def app_delete(ctx: _Context, name: str) -> None:
    """Delete the application NAME with its devices and its events."""
    with ctx.api() as api:
        api.request("DELETE", f"{REGISTRY}/apps/{_seg(name)}")
    click.echo(f"application {name} deleted")


# --- devices -------------------------------------------------------------------------------------


@main.group()
def device() -> None:
    """Create, list, show and delete devices."""


@device.command("create")
@click.argument("application")
@click.argument("name")
@click.option("--password", default=None, help="The device's password (user NAME@APPLICATION).")
@click.option("--username", default=None, help="A username credential (needs --user-password).")
@click.option("--user-password", default=None, help="The password of --username.")
@click.option("--psk", default=None, metavar="KEY",
              help="A pre-shared key for CoAP over DTLS (identity NAME@APPLICATION, at most 32 bytes), "
                   "as text of at most 16 bytes.")
@click.option("--alias", "aliases", multiple=True, help="Another name of the device (repeatable).")
@click.option("--ttn-payload", type=click.Choice(["raw", "fields", "full"]), default=None,
              help="What The Things Network webhooks publish for this device (spec.ttn.payload).")
@click.option("--gateway", "gateways", multiple=True,
              help="A device allowed to publish for this one (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@pass_context
def device_create(
    ctx: _Context, application: str, name: str, password: str | None, username: str | None,
    user_password: str | None, psk: str | None, aliases: tuple[str, ...], ttn_payload: str | None,
    gateways: tuple[str, ...], labels: tuple[str, ...], disabled: bool,
) -> None:
    """Create the device NAME in APPLICATION."""
    if (username is None) != (user_password is None):
        raise click.UsageError("--username and --user-password go together")
    credentials: list[dict[str, Any]] = []
    if password is not None:
        credentials.append({"pass": password})
    if username is not None:
        credentials.append({"user": {"username": username, "password": user_password}})
    if psk is not None:
        if not 0 < len(psk.encode()) <= 16:
            raise click.UsageError("--psk takes 1 to 16 bytes (the limit of the DTLS stack)")
        # The registry keeps keys as base64 of their bytes; DTLS clients take the same text (`coap-client -k`).
        credentials.append({"psk": {"key": base64.b64encode(psk.encode()).decode("ascii")}})
    spec: dict[str, Any] = {}
    if credentials:
        spec["authentication"] = {"credentials": credentials}
    if aliases:
        spec["alias"] = list(aliases)
    if gateways:
        spec["gatewaySelector"] = {"matchNames": list(gateways)}
    if ttn_payload:
        spec["ttn"] = {"payload": ttn_payload}
    if disabled:
        spec["core"] = {"disabled": True}
    metadata = {"name": name, "application": application, "labels": parse_labels(labels)}
    with ctx.api() as api:
        api.request("POST", f"{REGISTRY}/apps/{_seg(application)}/devices",
                    body={"metadata": metadata, "spec": spec})
    click.echo(f"device {name} created in {application}")


@device.command("list")
@click.argument("application")
@click.option("--labels", "selector", default=None, help="Label selector, e.g. 'room=1'.")
@pass_context
def device_list(ctx: _Context, application: str, selector: str | None) -> None:
    """List the devices of APPLICATION."""
    with ctx.api() as api:
        reply = api.request("GET", f"{REGISTRY}/apps/{_seg(application)}/devices",
                            params={"labels": selector} if selector else None)
    click.echo(table(["NAME", "AGE", "LABELS"], resource_rows(items_of(reply))))


@device.command("get")
@click.argument("application")
@click.argument("name")
@pass_context
def device_get(ctx: _Context, application: str, name: str) -> None:
    """Print the device NAME of APPLICATION as JSON (credentials are never shown)."""
    with ctx.api() as api:
        click.echo(dumps(api.request("GET", f"{REGISTRY}/apps/{_seg(application)}/devices/{_seg(name)}")))


@device.command("delete")
@click.argument("application")
@click.argument("name")
@pass_context
def device_delete(ctx: _Context, application: str, name: str) -> None:
    """Delete the device NAME of APPLICATION."""
    with ctx.api() as api:
        api.request("DELETE", f"{REGISTRY}/apps/{_seg(application)}/devices/{_seg(name)}")
    click.echo(f"device {name} deleted from {application}")


# --- tokens --------------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Create access tokens."""


@token.command("create")
@click.option("--description", default="", help="What the token is for.")
@click.option("--scope", "scopes", multiple=True, metavar="APP",
              help="Limit the token to this application (repeatable); unlimited by default.")
@pass_context
def token_create(ctx: _Context, description: str, scopes: tuple[str, ...]) -> None:
    """Create an access token and print it (it is shown this once)."""
    body: dict[str, Any] = {"description": description}
    if scopes:
        body["scopes"] = list(scopes)
    with ctx.api() as api:
        reply = api.request("POST", TOKENS, body=body)
    if not isinstance(reply, dict) or not isinstance(reply.get("token"), str):
        raise CliError("Hawser did not return a token")
    click.echo(reply["token"])
    click.echo("the token is shown this once; Hawser keeps only its hash", err=True)


# --- events --------------------------------------------------------------------------------------


@main.command()
@click.argument("application")
@click.option("--group", default=None, help="Consumer group: sockets of one group share the events "
              "and the group resumes where it left off.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
@pass_context
def stream(ctx: _Context, application: str, group: str | None, count: int | None) -> None:
    """Print the events of APPLICATION as they arrive, one JSON CloudEvent a line (Ctrl-C ends)."""
    from hawser._cli_stream import run_stream

    if group is not None and count is not None:
        # The server commits what it wrote to the socket; events past --count that it already sent
        # would be lost to the group (WebSocket has no application acknowledgement).
        raise click.UsageError("--count cannot be combined with --group: the group would skip the "
                               "events sent after the last one printed")

    def opened() -> None:
        click.echo(f"streaming the events of {application} (Ctrl-C to stop)", err=True)

    run_stream(ctx.url, ctx.token, application, group=group, count=count, on_open=opened)


if __name__ == "__main__":
    main()
