"""Chat API under many concurrent widget sessions, with a bare FastAPI endpoint as the reference in the same run.

python bench/load.py [--sessions 200] [--messages 5] [--think-ms 0] [--database-url URL]
  -> {"sessions", "messages_per_session", "chat": {"p50_ms", "p99_ms", "req_s", "errors"},
      "bare": {"p50_ms", "p99_ms", "req_s", "errors"}, "p99_ratio", "lost", "duplicated", "load_avg_1m"}

Both servers run as their own uvicorn process on loopback with one worker each; the chat server uses the fake
model backend (no generation cost), the real retriever, guards and database. Every session opens a conversation and
posts its messages one after another, each with a client message id, reading the answer stream to its `done` event;
`--think-ms` waits between a session's messages as a person typing would. The bare server answers the same number of
requests with the same concurrency from a handler that returns a fixed JSON object. Afterwards every conversation's
stored history is read back: `lost` counts customer messages or answers missing, `duplicated` those stored twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

log = logging.getLogger("bench.load")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/bare")
    async def bare(body: dict):
        return {"ok": True, "echo": len(body)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(np.asarray(values), q)), 1) if values else 0.0


def _summary(latencies: list[float], errors: int, wall_s: float) -> dict:
    return {
        "requests": len(latencies) + errors,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "req_s": round(len(latencies) / wall_s, 1) if wall_s else 0.0,
        "errors": errors,
    }


async def _read_stream(response) -> dict | None:
    """The data of the `done` event of an answer stream (None if the stream ended without one)."""
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event in ("done", "error"):
            data = json.loads(line[5:])
            return data if event == "done" else {"error": data.get("detail")}
    return None


async def _chat_session(client, base: str, n: int, think_s: float, questions: list[str], out: dict) -> None:
    try:
        r = await client.post(f"{base}/api/conversations", json={})
    except Exception as exc:  # noqa: BLE001 - a saturated server: counted, the run goes on
        out["errors"] += 1
        out.setdefault("error_details", []).append(f"opening a conversation failed: {type(exc).__name__}")
        return
    if r.status_code != 201:
        out["errors"] += 1
        out.setdefault("error_details", []).append(f"opening a conversation: HTTP {r.status_code}")
        return
    conv = r.json()
    headers = {"Authorization": f"Bearer {conv['token']}"}
    sent: list[tuple[str, str]] = []
    for i in range(n):
        text = questions[(hash(conv["id"]) + i) % len(questions)] + f" (#{i})"
        cid = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            async with client.stream(
                "POST",
                f"{base}/api/conversations/{conv['id']}/messages",
                json={"text": text, "client_message_id": cid},
                headers=headers,
            ) as resp:
                if resp.status_code == 200:
                    done = await _read_stream(resp)
                else:
                    done = {"error": f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:200]}"}
        except Exception as exc:  # noqa: BLE001 - counted as an error; a client would retry with the same id
            log.debug("message failed: %s", exc)
            done = None
        if done is None or "error" in done:
            out["errors"] += 1
            out.setdefault("error_details", []).append((done or {}).get("error", "stream ended without an answer"))
        else:
            out["latencies"].append((time.perf_counter() - started) * 1000)
        sent.append((cid, text))
        if think_s:
            await asyncio.sleep(think_s)
    out["conversations"].append((conv["id"], conv["token"], sent))


async def _bare_session(client, base: str, n: int, think_s: float, out: dict) -> None:
    for _ in range(n + 1):
        started = time.perf_counter()
        try:
            r = await client.post(f"{base}/bare", json={"text": "How long do refunds take?"})
            ok = r.status_code == 200
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            out["latencies"].append((time.perf_counter() - started) * 1000)
        else:
            out["errors"] += 1
        if think_s:
            await asyncio.sleep(think_s)


async def _verify(client, base: str, conversations: list) -> tuple[int, int]:
    lost = duplicated = 0
    for conv_id, token, sent in conversations:
        r = await client.get(
            f"{base}/api/conversations/{conv_id}/messages", headers={"Authorization": f"Bearer {token}"}
        )
        messages = r.json()["messages"]
        customer = [m["text"] for m in messages if m["role"] == "customer"]
        answers = [m for m in messages if m["role"] in ("bot", "system", "agent")]
        for _cid, text in sent:
            count = customer.count(text)
            lost += count == 0
            duplicated += max(0, count - 1)
        lost += max(0, len(sent) - len(answers))
        duplicated += max(0, len(answers) - len(sent))
    return lost, duplicated


async def _drive(args, chat_base: str, bare_base: str) -> dict:
    import httpx

    from support_bot.cli import DEMO_FAQ

    questions = [line.split(",", 2)[1] for line in DEMO_FAQ.read_text(encoding="utf-8").splitlines()[1:] if line]
    limits = httpx.Limits(max_connections=args.sessions + 10, max_keepalive_connections=args.sessions + 10)
    think = args.think_ms / 1000
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        bare = {"latencies": [], "errors": 0}
        t0 = time.perf_counter()
        await asyncio.gather(*(_bare_session(client, bare_base, args.messages, think, bare) for _ in range(args.sessions)))
        bare_wall = time.perf_counter() - t0

        chat = {"latencies": [], "errors": 0, "conversations": []}
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_chat_session(client, chat_base, args.messages, think, questions, chat) for _ in range(args.sessions))
        )
        chat_wall = time.perf_counter() - t0
        lost, duplicated = await _verify(client, chat_base, chat["conversations"])
        for detail in sorted(set(chat.get("error_details", [])))[:5]:
            log.info("error: %s", detail)
    chat_s, bare_s = _summary(chat["latencies"], chat["errors"], chat_wall), _summary(bare["latencies"], bare["errors"], bare_wall)
    return {
        "sessions": args.sessions,
        "messages_per_session": args.messages,
        "think_ms": args.think_ms,
        "chat": chat_s,
        "bare": bare_s,
        "p99_ratio": round(chat_s["p99_ms"] / bare_s["p99_ms"], 2) if bare_s["p99_ms"] else None,
        "lost": lost,
        "duplicated": duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument("--database-url", help="default: SQLite in a throw-away data dir")
    parser.add_argument("--server-log", type=Path, help="keep the chat server's log here")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        _serve_bare(args.serve_bare)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="support-bot-load-") as tmp:
        chat_port, bare_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
        env.update(
            SUPPORT_BOT_DATA_DIR=str(Path(tmp) / "data"),
            SUPPORT_BOT_LLM__BACKEND="fake",
            SUPPORT_BOT_PORT=str(chat_port),
            # Every simulated customer comes from 127.0.0.1: the per-IP abuse limits would measure themselves.
            SUPPORT_BOT_WIDGET__RATE_LIMIT_ENABLED="false",
        )
        if args.database_url:
            env["SUPPORT_BOT_DATABASE_URL"] = args.database_url
        server_log_path = args.server_log or Path(tmp) / "server.log"
        server_log = open(server_log_path, "wb")
        cli = [sys.executable, "-m", "support_bot.cli"]
        procs = [
            # The server's log goes to a file: a pipe nobody reads fills up and then blocks the server mid-request.
            subprocess.Popen([*cli, "serve", "--seed"], env=env, stdout=subprocess.DEVNULL, stderr=server_log),
            subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)], env=env),
        ]
        try:
            chat_base, bare_base = f"http://127.0.0.1:{chat_port}", f"http://127.0.0.1:{bare_port}"
            _wait_ready(f"{chat_base}/readyz", procs[0])
            log.info("servers ready; %d sessions x %d messages", args.sessions, args.messages)
            result = asyncio.run(_drive(args, chat_base, bare_base))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
            server_log.close()
            errors = [line for line in server_log_path.read_text(errors="replace").splitlines() if "Traceback" in line
                      or " ERROR " in line or '"level": "ERROR"' in line]
            if errors:
                log.info("the chat server logged %d errors; the first: %s", len(errors), errors[0][:300])
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
