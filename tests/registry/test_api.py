"""The registry REST API in process (httpx over ASGI): statuses, problem bodies, selectors,
tenant isolation and token scopes, and that no secret ever comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from auth.tokens import AccessTokenAuthenticator, ensure_bootstrap_token
from hawser.problems import API_STATUS, exception_handlers
from registry.api import routes
from registry.store import RegistryStore

R = "/api/registry/v1alpha1"
SECRETS = ("device-password-1", "user-password-2", "AAECAw")


def build(store: RegistryStore) -> Starlette:
    return Starlette(routes=routes(store, AccessTokenAuthenticator(store)),
                     exception_handlers=exception_handlers(API_STATUS))  # type: ignore[arg-type]


@pytest.fixture
async def client(store: RegistryStore) -> AsyncIterator[httpx.AsyncClient]:
    token = await ensure_bootstrap_token(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build(store)), base_url="http://hawser",
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


async def token_for(client: httpx.AsyncClient, user: str, **extra: Any) -> dict[str, str]:
    reply = await client.post("/api/tokens/v1alpha1", json={"user": user, **extra})
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['token']}"}


def assert_problem(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body


async def test_application_lifecycle(client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{R}/apps", json={"metadata": {"name": "app1", "labels": {"env": "prod"}}})
    assert reply.status_code == 201
    assert reply.headers["location"] == f"{R}/apps/app1"
    created = reply.json()
    assert created["metadata"]["name"] == "app1"
    assert created["metadata"]["generation"] == 1
    assert_problem(await client.post(f"{R}/apps", json={"metadata": {"name": "app1"}}), 409)

    got = (await client.get(f"{R}/apps/app1")).json()
    assert got == created
    got["spec"] = {"core": {"disabled": True}}
    assert (await client.put(f"{R}/apps/app1", json=got)).status_code == 204
    body = assert_problem(await client.put(f"{R}/apps/app1", json=got), 409)
    assert body["type"].endswith("stale-resource-version")
    fresh = (await client.get(f"{R}/apps/app1")).json()
    assert fresh["spec"] == {"core": {"disabled": True}}
    assert fresh["metadata"]["generation"] == 2

    stale = created["metadata"]["resourceVersion"]
    assert_problem(await client.delete(f"{R}/apps/app1", params={"resourceVersion": stale}), 409)
    reply = await client.request("DELETE", f"{R}/apps/app1",
                                 json={"preconditions": {"resourceVersion": fresh["metadata"]["resourceVersion"]}})
    assert reply.status_code == 204
    assert_problem(await client.get(f"{R}/apps/app1"), 404)
    assert_problem(await client.delete(f"{R}/apps/app1"), 404)


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{R}/apps", content=b"{nope", headers={"content-type": "application/json"})
    body = assert_problem(reply, 400)
    assert "JSON" in body["detail"]
    body = assert_problem(await client.post(f"{R}/apps", json={"metadata": {}}), 422)
    assert body["errors"][0]["loc"] == ["metadata", "name"]
    body = assert_problem(await client.post(f"{R}/apps", json={"metadata": {"name": "Bad_Name"}}), 400)
    assert body["type"].endswith("invalid-name")
    await client.post(f"{R}/apps", json={"metadata": {"name": "a"}})
    assert_problem(await client.put(f"{R}/apps/a", json={"metadata": {"name": "b"}}), 400)
    assert_problem(await client.get(f"{R}/apps", params={"labels": "a in (x"}), 400)
    assert_problem(await client.post(f"{R}/apps/a/devices", json={
        "metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": 5}]}}}), 400)
    reply = await client.get(f"{R}/apps", headers={"Authorization": ""})
    assert_problem(reply, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await client.get(f"{R}/apps", headers={"Authorization": "Bearer hwsr_0123456789abcdef_x"}), 401)
    assert_problem(await client.get(f"{R}/apps", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401)


async def test_devices_and_secrets(client: httpx.AsyncClient) -> None:
    await client.post(f"{R}/apps", json={"metadata": {"name": "app"}})
    device = {
        "metadata": {"name": "dev-1", "labels": {"kind": "meter"}},
        "spec": {"credentials": {"credentials": [  # Drogue's legacy location
            {"pass": SECRETS[0]},
            {"user": {"username": "m1", "password": SECRETS[1], "unique": True}},
            {"psk": {"key": SECRETS[2] + "=="}},
        ]}},
    }
    reply = await client.post(f"{R}/apps/app/devices", json=device)
    assert reply.status_code == 201
    assert reply.headers["location"] == f"{R}/apps/app/devices/dev-1"
    await client.post(f"{R}/apps/app/devices", json={"metadata": {"name": "dev 2"}})  # refused: whitespace
    await client.post(f"{R}/apps/app/devices", json={"metadata": {"name": "dev:2@x"}})
    assert_problem(await client.post(f"{R}/apps/app/devices", json=device), 409)
    assert_problem(await client.post(f"{R}/apps/app/devices", json={"metadata": {"name": "x", "application": "o"}}),
                   400)

    texts = [reply.text]
    listed = await client.get(f"{R}/apps/app/devices")
    texts.append(listed.text)
    assert [d["metadata"]["name"] for d in listed.json()] == ["dev-1", "dev:2@x"]
    selected = await client.get(f"{R}/apps/app/devices", params={"labels": "kind=meter"})
    assert [d["metadata"]["name"] for d in selected.json()] == ["dev-1"]
    read = await client.get(f"{R}/apps/app/devices/dev-1")
    texts.append(read.text)
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
        assert "argon2" not in text

    doc = read.json()
    doc["spec"]["core"] = {"disabled": True}
    assert (await client.put(f"{R}/apps/app/devices/dev-1", json=doc)).status_code == 204
    assert_problem(await client.put(f"{R}/apps/app/devices/dev-1", json=doc), 409)
    assert (await client.get(f"{R}/apps/app/devices/dev%3A2%40x")).status_code == 200
    assert (await client.delete(f"{R}/apps/app/devices/dev-1")).status_code == 204
    assert_problem(await client.get(f"{R}/apps/app/devices/dev-1"), 404)
    assert_problem(await client.get(f"{R}/apps/nope/devices"), 404)


async def test_isolation_roles_and_scopes(client: httpx.AsyncClient) -> None:
    alice, bob = await token_for(client, "alice"), await token_for(client, "bob")
    assert (await client.post(f"{R}/apps", json={"metadata": {"name": "a1"}}, headers=alice)).status_code == 201
    assert (await client.post(f"{R}/apps", json={"metadata": {"name": "a2"}}, headers=alice)).status_code == 201
    assert (await client.post(f"{R}/apps", json={"metadata": {"name": "b1"}}, headers=bob)).status_code == 201
    await client.post(f"{R}/apps/b1/devices", json={"metadata": {"name": "secret-device"}}, headers=bob)

    # alice cannot see bob's application, nor its devices: 404 as if they did not exist.
    assert [a["metadata"]["name"] for a in (await client.get(f"{R}/apps", headers=alice)).json()] == ["a1", "a2"]
    for path in ("/apps/b1", "/apps/b1/devices", "/apps/b1/devices/secret-device"):
        assert_problem(await client.get(R + path, headers=alice), 404)
    assert_problem(await client.put(f"{R}/apps/b1", json={"metadata": {"name": "b1"}}, headers=alice), 404)
    assert_problem(await client.delete(f"{R}/apps/b1", headers=alice), 404)
    assert_problem(await client.get("/api/admin/v1alpha1/apps/b1/members", headers=alice), 404)

    # Roles: bob makes alice a reader of b1; she can read but not write (403) nor administer.
    members = (await client.get("/api/admin/v1alpha1/apps/b1/members", headers=bob)).json()
    assert members["members"] == {"bob": {"role": "admin"}}
    members["members"]["alice"] = {"role": "reader"}
    assert (await client.put("/api/admin/v1alpha1/apps/b1/members", json=members, headers=bob)).status_code == 204
    assert_problem(await client.put("/api/admin/v1alpha1/apps/b1/members", json=members, headers=bob), 409)
    assert (await client.get(f"{R}/apps/b1/devices/secret-device", headers=alice)).status_code == 200
    assert_problem(await client.post(f"{R}/apps/b1/devices", json={"metadata": {"name": "x"}}, headers=alice), 403)
    assert_problem(await client.delete(f"{R}/apps/b1/devices/secret-device", headers=alice), 403)
    assert_problem(await client.get("/api/admin/v1alpha1/apps/b1/members", headers=alice), 403)

    # A token scoped to a1 sees only a1, even though alice may read more.
    reply = await client.post("/api/tokens/v1alpha1", json={"scopes": ["a1"], "description": "ci"}, headers=alice)
    assert reply.status_code == 201
    created = reply.json()
    assert created["scopes"] == ["a1"]
    assert created["user"] == "alice"
    assert not created["superuser"]
    scoped = {"Authorization": f"Bearer {created['token']}"}
    assert [a["metadata"]["name"] for a in (await client.get(f"{R}/apps", headers=scoped)).json()] == ["a1"]
    assert_problem(await client.get(f"{R}/apps/a2", headers=scoped), 404)
    assert_problem(await client.get(f"{R}/apps/b1/devices", headers=scoped), 404)
    assert_problem(await client.post(f"{R}/apps", json={"metadata": {"name": "c1"}}, headers=scoped), 403)
    assert_problem(await client.post("/api/tokens/v1alpha1", json={"scopes": ["a2"]}, headers=scoped), 403)
    assert_problem(await client.post("/api/tokens/v1alpha1", json={"user": "bob"}, headers=alice), 403)

    # Token listing never shows a secret; deleting works for the owner only.
    listed = await client.get("/api/tokens/v1alpha1", headers=alice)
    assert {t["description"] for t in listed.json()} == {"", "ci"}
    assert all("token" not in t for t in listed.json())
    assert "hwsr_" not in listed.text
    assert_problem(await client.delete(f"/api/tokens/v1alpha1/{created['id']}", headers=bob), 404)
    assert (await client.delete(f"/api/tokens/v1alpha1/{created['id']}", headers=alice)).status_code == 204
    assert_problem(await client.get(f"{R}/apps", headers=scoped), 401)


async def test_openapi(client: httpx.AsyncClient) -> None:
    reply = await client.get(f"{R}/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"][f"{R}/apps/{{app}}"]) == {"get", "put", "delete"}
