"""What the registry API refuses, on SQLite and PostgreSQL: names that cannot exist (404), values
the database would choke on (NUL, control characters, over-long), oversized or absurd bodies, scoped
tokens reaching beyond their scopes, an application left without an admin; and its paging."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth.tokens import ensure_bootstrap_token
from registry._http import MAX_BODY, guarded
from registry.store import RegistryStore
from tests.registry.test_api import assert_problem, build, token_for

R = "/api/registry/v1alpha1"
T = "/api/tokens/v1alpha1"
A = "/api/admin/v1alpha1"


@pytest.fixture
async def api(store: RegistryStore) -> AsyncIterator[httpx.AsyncClient]:
    token = await ensure_bootstrap_token(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build(store)), base_url="http://hawser",
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.post(f"{R}/apps", json={"metadata": {"name": "app1"}})).status_code == 201
        yield c


async def test_scoped_token_manages_only_tokens_within_its_scopes(api: httpx.AsyncClient) -> None:
    alice = await token_for(api, "alice")
    wide_id = (await api.get(T, headers=alice)).json()[0]["id"]
    reply = await api.post(T, json={"scopes": ["a1"]}, headers=alice)
    scoped = {"Authorization": f"Bearer {reply.json()['token']}"}
    scoped_id = reply.json()["id"]

    narrower = (await api.post(T, json={}, headers=scoped)).json()  # inherits the scopes
    assert narrower["scopes"] == ["a1"]
    assert_problem(await api.post(T, json={"scopes": ["a1", "a2"]}, headers=scoped), 403)

    listed = {t["id"] for t in (await api.get(T, headers=scoped)).json()}
    assert listed == {scoped_id, narrower["id"]}
    # Chosen: 404, as for a token that does not exist; the scoped token cannot revoke a wider one.
    assert_problem(await api.delete(f"{T}/{wide_id}", headers=scoped), 404)
    assert (await api.get(f"{R}/apps", headers=alice)).status_code == 200
    assert (await api.delete(f"{T}/{narrower['id']}", headers=scoped)).status_code == 204
    assert (await api.delete(f"{T}/{scoped_id}", headers=alice)).status_code == 204
    assert_problem(await api.delete(f"{T}/%00", headers=alice), 404)


@pytest.mark.parametrize(("path", "write"), [
    (f"{R}/apps/%00", "DELETE"), (f"{R}/apps/A%20b", "PUT"), (f"{R}/apps/app1/devices/a%00b", "DELETE"),
    (f"{R}/apps/app1/devices/a%09b", "PUT"), (f"{R}/apps/%00/devices", "POST"),
    (f"{A}/apps/%00/members", "PUT"), (f"{R}/apps/{'x' * 300}", "DELETE"),
])
async def test_names_that_cannot_exist_are_not_found(api: httpx.AsyncClient, path: str, write: str) -> None:
    assert_problem(await api.get(path), 404)
    assert_problem(await api.request(write, path, json={"metadata": {"name": "x"}, "members": {}}), 404)


@pytest.mark.parametrize(("document", "status"), [
    ({"metadata": {"name": "d"}, "spec": {"alias": ["x" * 300]}}, 400),
    ({"metadata": {"name": "d"}, "spec": {"alias": ["a\u0000b"]}}, 400),
    ({"metadata": {"name": "d"}, "spec": {"alias": ["a b"]}}, 400),
    ({"metadata": {"name": "d", "labels": {"a": "\u0000"}}}, 422),
    ({"metadata": {"name": "d", "labels": {"a\u0000": "b"}}}, 422),
    ({"metadata": {"name": "d", "labels": {"k" * 300: "b"}}}, 422),
    ({"metadata": {"name": "d", "labels": {"a": "v" * 2000}}}, 422),
    ({"metadata": {"name": "d", "annotations": {"a\u0001": "b"}}}, 422),
    ({"metadata": {"name": "d", "annotations": {"a": "\u0000"}}}, 422),
    ({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [
        {"user": {"username": "u\u0000", "password": "p"}}]}}}, 400),
])
async def test_values_the_database_would_refuse(api: httpx.AsyncClient, document: object, status: int) -> None:
    assert_problem(await api.post(f"{R}/apps/app1/devices", json=document), status)
    assert (await api.get(f"{R}/apps/app1/devices")).json() == []


async def test_bad_user_names_and_lifetimes(api: httpx.AsyncClient, store: RegistryStore) -> None:
    assert_problem(await api.put(f"{A}/apps/app1/members",
                                 json={"members": {"a\u0000": {"role": "admin"}}}), 422)
    assert_problem(await api.put(f"{A}/apps/app1/members",
                                 json={"members": {"x" * 300: {"role": "admin"}}}), 422)
    assert_problem(await api.post(T, json={"user": "bob\u0000"}), 422)
    assert_problem(await api.post(T, json={"scopes": ["a\u0000"]}), 422)
    for lifetime in (b"1e308", b"99999999999999999", b"400000000"):
        reply = await api.post(T, content=b'{"expiresIn": %s}' % lifetime,
                               headers={"content-type": "application/json"})
        assert_problem(reply, 422)
    assert (await api.post(T, json={"expiresIn": 10 * 365 * 24 * 3600})).status_code == 201
    assert_problem(await api.get(f"{R}/apps", headers={"Authorization": "Bearer a\x01b"}), 401)
    # The device path's lookups never send what cannot exist to the database.
    assert await store.get_application_info("ap\u0000p1") is None
    assert await store.get_device_info("app1", "d\u0000") is None
    assert await store.find_device_by_username("app1", "u\u0000") is None
    assert await store.find_device_by_alias("app1", "x" * 300) is None
    assert await store.member_role("app1", "a\u0000") is None


async def test_bodies_too_large_or_too_deep(api: httpx.AsyncClient) -> None:
    big = b'{"metadata":{"name":"big"},"spec":{"x":"' + b"y" * MAX_BODY + b'"}}'
    body = assert_problem(await api.post(f"{R}/apps", content=big,
                                         headers={"content-type": "application/json"}), 413)
    assert body["type"].endswith("payload-too-large")
    deep = b'{"metadata":{"name":"deep"},"spec":{"x":' + b"[" * 100_000 + b"}}"
    assert_problem(await api.post(f"{R}/apps", content=deep,
                                  headers={"content-type": "application/json"}), 400)


async def test_the_last_admin_stays(api: httpx.AsyncClient) -> None:
    bob = await token_for(api, "bob")
    assert (await api.post(f"{R}/apps", json={"metadata": {"name": "bobs"}}, headers=bob)).status_code == 201
    for members in ({}, {"bob": {"role": "manager"}}, {"carol": {"role": "reader"}}):
        body = assert_problem(await api.put(f"{A}/apps/bobs/members", json={"members": members},
                                            headers=bob), 409)
        assert "admin" in body["detail"]
    assert (await api.get(f"{R}/apps/bobs", headers=bob)).status_code == 200
    handover = {"members": {"bob": {"role": "reader"}, "carol": {"role": "admin"}}}
    assert (await api.put(f"{A}/apps/bobs/members", json=handover, headers=bob)).status_code == 204
    assert (await api.put(f"{A}/apps/bobs/members", json={"members": {}})).status_code == 204  # superuser


async def test_paging_after_the_selector(api: httpx.AsyncClient) -> None:
    for n in range(6):
        labels = {"kind": "even" if n % 2 == 0 else "odd"}
        await api.post(f"{R}/apps", json={"metadata": {"name": f"p{n}", "labels": labels}})
        await api.post(f"{R}/apps/app1/devices", json={"metadata": {"name": f"d{n}", "labels": labels}})

    async def names(path: str, **params: str) -> list[str]:
        reply = await api.get(path, params=params)
        assert reply.status_code == 200, reply.text
        return [d["metadata"]["name"] for d in reply.json()]

    assert await names(f"{R}/apps", labels="kind=even") == ["p0", "p2", "p4"]
    assert await names(f"{R}/apps", labels="kind=even", offset="1", limit="1") == ["p2"]
    assert await names(f"{R}/apps", offset="5") == ["p4", "p5"]
    assert await names(f"{R}/apps", limit="0") == []
    assert await names(f"{R}/apps/app1/devices", labels="kind=odd", limit="2") == ["d1", "d3"]
    assert await names(f"{R}/apps/app1/devices", offset="4", limit="1000") == ["d4", "d5"]
    for bad in ({"limit": "1001"}, {"limit": "-1"}, {"offset": "x"}, {"limit": "1.5"}):
        assert_problem(await api.get(f"{R}/apps", params=bad), 400)
        assert_problem(await api.get(f"{R}/apps/app1/devices", params=bad), 400)


async def test_a_bug_is_logged_once_and_answered_with_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("secret internals")

    app = Starlette(routes=[Route("/x", guarded(broken))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        with caplog.at_level(logging.ERROR):
            reply = await c.get("/x")
    body = assert_problem(reply, 500)
    assert "secret" not in reply.text
    assert body["type"].endswith("internal")
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1
    assert "secret internals" in str(logged[0].exc_info[1])  # type: ignore[index]
