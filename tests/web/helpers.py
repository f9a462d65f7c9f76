"""Helpers for talking to the chat API in tests."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient


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
