"""Helpers for talking to the chat API and the console API in tests."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD


def parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        events.append((name, json.loads(data) if data else {}))
    return events


def new_conversation(client: TestClient) -> tuple[str, dict]:
    res = client.post("/api/conversations", json={})
    assert res.status_code == 201, res.text
    body = res.json()
    return body["id"], {"Authorization": f"Bearer {body['token']}"}


def ask(client: TestClient, conv_id: str, headers: dict, text: str, **extra) -> list[tuple[str, dict]]:
    res = client.post(f"/api/conversations/{conv_id}/messages", json={"text": text, **extra}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/event-stream")
    return parse_sse(res.text)


# -- the console --------------------------------------------------------------------------------------------------


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict:
    """Log in through the console's JSON API as the only user of this client; returns /me with the CSRF token."""
    client.cookies.clear()
    res = client.post("/api/console/login", json={"username": username, "password": password})
    assert res.status_code == 200, res.text
    return res.json()


def csrf(me: dict) -> dict:
    """The header a state-changing console call carries, for the session that `login` returned."""
    return {"X-CSRF-Token": me["csrf_token"]}
