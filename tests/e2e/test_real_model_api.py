"""The real default model answers through the HTTP API of a real server process."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_real_model_answers_through_the_api(server):
    conv = httpx.post(f"{server.url}/api/conversations", json={}).json()
    headers = {"Authorization": f"Bearer {conv['token']}"}
    events = []
    with httpx.stream(
        "POST",
        f"{server.url}/api/conversations/{conv['id']}/messages",
        json={"text": "Which payment methods do you accept?", "client_message_id": "e2e-1"},
        headers=headers,
        timeout=120,
    ) as res:
        assert res.status_code == 200
        name = None
        for line in res.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    names = [n for n, _ in events]
    assert names.count("done") == 1 and names[-1] == "done"
    assert names.count("token") >= 2
    done = events[-1][1]
    assert done["abstained"] is False
    assert done["citations"][0]["entry_id"] == "pay-01"
    assert done["text"].strip()
    history = httpx.get(f"{server.url}/api/conversations/{conv['id']}/messages", headers=headers).json()["messages"]
    assert [m["role"] for m in history] == ["customer", "bot"]
    assert history[1]["text"] == done["text"]
