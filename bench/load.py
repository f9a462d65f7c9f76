"""Chat API under many concurrent widget sessions, the model streaming at a realistic pace, with /healthz probed all
along: its p99 while idle is the reference, measured in the same run.

python bench/load.py [--sessions 500] [--messages 5] [--tokens-per-s 30] [--think-ms 0] [--idle-s 10]
                     [--database-url URL] [--bare] [--server-log PATH]
  -> {"mode": "load", "sessions", "messages_per_session", "tokens_per_s", "think_ms",
      "chat": {"requests", "p50_ms", "p99_ms", "first_token_p50_ms", "first_token_p99_ms", "req_s", "errors"},
      "healthz": {"idle_p50_ms", "idle_p99_ms", "loaded_p50_ms", "loaded_p99_ms", "idle_n", "loaded_n",
                  "p99_ratio"},
      "lost", "duplicated", "resent", "server": {"threads_max", "rss_mb_start", "rss_mb_end", "fds_start", "fds_end"},
      "load_avg_1m"}   (+ "bare" and "bare_p99_ratio" with --bare)
python bench/load.py --soak-seconds 600 --sessions 100 [--warmup-s 120] [--messages 5] [--tokens-per-s 30]
  -> {"mode": "soak", ..., "turns", "rss_mb_after_warmup", "rss_mb_end", "rss_growth_mb", "rss_growth_mb_per_h",
      "fds_after_warmup", "fds_end", "fd_growth", "threads_after_warmup", "threads_end", "rss_mb_timeline", ...}

The chat server runs as its own uvicorn process on loopback (one worker): the real retriever, guards and database,
and a model that writes the best source's answer back, citing it, one word every 1/tokens-per-s seconds, so answers
take as long to stream as they would from a served model. Every session opens a conversation and posts its messages
one after another, each with a client message id, reading the answer stream to its `done` event; `--think-ms` waits
between a session's messages as a person typing would. A separate process asks /healthz every 50 ms on one kept-alive
connection: while the sessions run (loaded), and for --idle-s seconds before they start and after they end (idle).
Afterwards every conversation's stored history is read back: `lost` counts customer messages, or answers a `done`
event named, that are missing; `duplicated` those stored twice and answers no `done` named (a message sent while a
person has the chat gets a `done` naming no answer: the bot stays silent; `handed_off` counts the answers that handed
a chat over). The server's threads, resident memory and open files are sampled every second.

In soak mode the sessions go on (a new conversation after each --messages) for --soak-seconds; memory and open files
are compared between the end of --warmup-s and the end of the run. `--bare` also runs the old reference: the same
sessions' request count against a bare FastAPI endpoint in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

log = logging.getLogger("bench.load")
PROBE_INTERVAL_S = 0.05
# As the widget does after a dropped connection: the same message again, with the same client message id.
RESENDS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the servers -------------------------------------------------------------------------------------------------


def _paced_engine(tokens_per_s: float):
    from support_bot.llm.backends.fake import FakeEngine
    from support_bot.llm.prompt import validate_messages

    class PacedEngine(FakeEngine):
        """Writes the first source's answer back with its citation, one word at a time at the given pace; keeps
        nothing per call (a long soak must not measure the fake's own memory)."""

        def reply_for(self, messages):
            system = messages[0].content
            found = re.search(r"^\[1\] (.*?)(?=^\[\d+\] |\n\n|\Z)", system, flags=re.DOTALL | re.MULTILINE)
            if not found:
                return "I don't know; would you like to talk to a person?"
            lines = [line.strip() for line in found.group(1).splitlines() if line.strip()]
            answer = " ".join(line for line in lines if not line.endswith("?")) or " ".join(lines)
            answer = re.sub(r"^(?:A|Answer):\s*", "", answer)
            return re.sub(r"([.!?])(\s|$)", r" [1]\1\2", answer).strip()

        def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
            validate_messages(messages)
            return self._pieces(
                self.reply_for(messages), max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s
            )

    return PacedEngine(name="paced", delay_s=1.0 / tokens_per_s if tokens_per_s > 0 else 0.0)


def _serve_chat(port: int, tokens_per_s: float) -> None:
    from support_bot.chat.service import Assistant
    from support_bot.cli import seed
    from support_bot.core.config import get_settings
    from support_bot.core.db import migrate
    from support_bot.core.logs import configure_logging
    from web.app import create_app
    from web.server import serve

    settings = get_settings()
    configure_logging(settings)
    migrate(settings)
    seed(settings)
    settings = settings.model_copy(update={"migrate_on_start": False})
    app = create_app(settings, assistant=Assistant(settings, engine=_paced_engine(tokens_per_s)))
    serve(app, host="127.0.0.1", port=port, log_level="warning")


def _serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/bare")
    async def bare(body: dict):
        return {"ok": True, "echo": len(body)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _probe(url: str, out: Path) -> None:
    """Ask GET url every PROBE_INTERVAL_S on one kept-alive connection until SIGTERM; (time, ms or -1) lines."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    conn = None
    with open(out, "w", encoding="utf-8") as sink:
        while not stop.is_set():
            started = time.perf_counter()
            at = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                conn.request("GET", parts.path)
                response = conn.getresponse()
                response.read()
                ms = (time.perf_counter() - started) * 1000 if response.status == 200 else -1.0
            except (OSError, http.client.HTTPException):
                ms = -1.0
                if conn is not None:
                    conn.close()
                conn = None
            sink.write(f"{at:.3f} {ms:.3f}\n")
            sink.flush()
            stop.wait(max(0.0, PROBE_INTERVAL_S - (time.perf_counter() - started)))


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(url, timeout=5.0)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


# -- measuring ---------------------------------------------------------------------------------------------------


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


def _process_sample(pid: int) -> dict:
    """Threads, resident memory (MB) and open files of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))
    return {"t": time.time(), "rss_mb": rss_kb / 1024, "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append(_process_sample(self.pid))
            except (OSError, AttributeError):
                return
            self.stop.wait(1.0)

    def at(self, moment: float) -> dict:
        """The last sample taken at or before `moment` (the first one if none was)."""
        before = [s for s in self.samples if s["t"] <= moment]
        return before[-1] if before else self.samples[0]


def _probe_window(path: Path, start: float, end: float) -> tuple[list[float], int]:
    """Latencies (ms) of the probes sent in [start, end), and how many failed."""
    values, failed = [], 0
    for line in path.read_text().splitlines():
        at, ms = (float(x) for x in line.split())
        if start <= at < end:
            if ms < 0:
                failed += 1
            else:
                values.append(ms)
    return values, failed


async def _read_stream(response, started: float, out: dict) -> dict | None:
    """The data of the `done` event of an answer stream (None if the stream ended without one)."""
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
            if event == "token" and "first" not in out:
                out["first"] = (time.perf_counter() - started) * 1000
        elif line.startswith("data:") and event in ("done", "error"):
            data = json.loads(line[5:])
            return data if event == "done" else {"error": data.get("detail")}
    return None


def _fail(out: dict, detail: str) -> None:
    out["errors"] += 1
    out.setdefault("error_details", []).append(detail)


async def _conversation(client, base: str, n: int, think_s: float, questions: list[str], out: dict) -> None:
    """Open one conversation and send it `n` messages, each read to its `done` event."""
    import httpx

    try:
        r = await client.post(f"{base}/api/conversations", json={})
    except Exception as exc:  # noqa: BLE001 - a saturated server: counted, the run goes on
        _fail(out, f"opening a conversation failed: {type(exc).__name__}")
        return
    if r.status_code != 201:
        _fail(out, f"opening a conversation: HTTP {r.status_code}")
        return
    conv = r.json()
    headers = {"Authorization": f"Bearer {conv['token']}"}
    sent: list[tuple[str, str, str | None]] = []
    out["conversations"].append((conv["id"], conv["token"], sent))
    for i in range(n):
        text = questions[(hash(conv["id"]) + i) % len(questions)] + f" (#{i})"
        cid = uuid.uuid4().hex
        started = time.perf_counter()
        timing: dict = {}
        for attempt in range(RESENDS + 1):
            try:
                async with client.stream(
                    "POST",
                    f"{base}/api/conversations/{conv['id']}/messages",
                    json={"text": text, "client_message_id": cid},
                    headers=headers,
                ) as resp:
                    if resp.status_code == 200:
                        done = await _read_stream(resp, started, timing)
                    else:
                        body = (await resp.aread()).decode(errors="replace")[:200]
                        done = {"error": f"HTTP {resp.status_code}: {body}"}
                break
            except httpx.TransportError as exc:
                # The connection dropped (e.g. a kept-alive one the server closed as it was reused): the widget sends
                # the same message again with the same client message id, and the server stores and answers it once.
                done = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                if attempt < RESENDS:
                    out["resent"] = out.get("resent", 0) + 1
                    timing.clear()
            except Exception as exc:  # noqa: BLE001 - counted as an error
                done = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                break
        acknowledged = done is not None and "error" not in done
        # A done without a message id: a person has the chat, so the bot stored no answer (nor should it).
        sent.append((cid, text, done.get("message_id") if acknowledged else None))
        if not acknowledged:
            _fail(out, (done or {}).get("error", "stream ended without an answer"))
        else:
            if done.get("handoff"):
                out["handoffs"] += 1
            out["latencies"].append((time.perf_counter() - started) * 1000)
            if "first" in timing:
                out["first_token"].append(timing["first"])
            out["turns"] += 1
        if think_s:
            await asyncio.sleep(think_s)


async def _session(client, base: str, args, questions: list[str], out: dict, until: float | None) -> None:
    think = args.think_ms / 1000
    while True:
        await _conversation(client, base, args.messages, think, questions, out)
        if until is None or time.time() >= until:
            return


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
    gate = asyncio.Semaphore(50)

    async def one(conv_id: str, token: str, sent: list) -> tuple[int, int]:
        import httpx

        async with gate:
            for attempt in range(RESENDS + 1):
                try:
                    r = await client.get(
                        f"{base}/api/conversations/{conv_id}/messages", headers={"Authorization": f"Bearer {token}"}
                    )
                    break
                except httpx.TransportError:
                    # A kept-alive connection closed as it was reused: reading the history again is harmless.
                    if attempt == RESENDS:
                        raise
        messages = r.json()["messages"]
        customer = [m["text"] for m in messages if m["role"] == "customer"]
        answers = [m["id"] for m in messages if m["role"] in ("bot", "system")]
        acknowledged = [reply for _cid, _text, reply in sent if reply]
        missing = extra = 0
        for _cid, text, _reply in sent:
            count = customer.count(text)
            missing += count == 0
            extra += max(0, count - 1)
        # Every answer a done event named is stored, once; an answer nobody was told of is one too many.
        missing += sum(reply not in answers for reply in acknowledged)
        extra += sum(answer not in acknowledged for answer in answers) + len(answers) - len(set(answers))
        return missing, extra

    for missing, extra in await asyncio.gather(*(one(*c) for c in conversations)):
        lost += missing
        duplicated += extra
    return lost, duplicated


def _questions() -> list[str]:
    from support_bot.cli import DEMO_FAQ

    return [line.split(",", 2)[1] for line in DEMO_FAQ.read_text(encoding="utf-8").splitlines()[1:] if line]


async def _drive(args, chat_base: str, probe_out: Path, sampler: Sampler, bare_base: str | None) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=args.sessions + 10, max_keepalive_connections=args.sessions + 10)
    soak = bool(args.soak_seconds)
    result: dict = {}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        idle_start = time.time()
        await asyncio.sleep(args.idle_s)
        idle_end = time.time()
        log.info("idle probes done; %d sessions x %d messages", args.sessions, args.messages)

        chat = {"latencies": [], "first_token": [], "errors": 0, "conversations": [], "turns": 0, "handoffs": 0}
        questions = _questions()
        t0 = time.perf_counter()
        load_start = time.time()
        until = load_start + args.soak_seconds if soak else None
        await asyncio.gather(*(_session(client, chat_base, args, questions, chat, until) for _ in range(args.sessions)))
        load_end = time.time()
        chat_wall = time.perf_counter() - t0
        # Idle again once the sessions are done (summaries written off the answers' path may still be running).
        await asyncio.sleep(min(args.idle_s, 2.0))
        after_start = time.time()
        await asyncio.sleep(args.idle_s)
        after_end = time.time()
        lost, duplicated = await _verify(client, chat_base, chat["conversations"])
        for detail in sorted(set(chat.get("error_details", [])))[:5]:
            log.info("error: %s", detail)

        if bare_base:
            bare = {"latencies": [], "errors": 0}
            t0 = time.perf_counter()
            await asyncio.gather(
                *(_bare_session(client, bare_base, args.messages, args.think_ms / 1000, bare)
                  for _ in range(args.sessions))
            )
            result["bare"] = _summary(bare["latencies"], bare["errors"], time.perf_counter() - t0)

    # The idle reference: before the sessions start and after they end, both in this run.
    before, before_failed = _probe_window(probe_out, idle_start, idle_end)
    after, after_failed = _probe_window(probe_out, after_start, after_end)
    idle, idle_failed = before + after, before_failed + after_failed
    # The first seconds of the load are the sessions connecting, not the load itself.
    loaded, loaded_failed = _probe_window(probe_out, load_start + min(5.0, (load_end - load_start) / 10), load_end)
    chat_s = _summary(chat["latencies"], chat["errors"], chat_wall)
    chat_s["first_token_p50_ms"] = _pct(chat["first_token"], 50)
    chat_s["first_token_p99_ms"] = _pct(chat["first_token"], 99)
    healthz = {
        "idle_p50_ms": _pct(idle, 50), "idle_p99_ms": _pct(idle, 99),
        "loaded_p50_ms": _pct(loaded, 50), "loaded_p99_ms": _pct(loaded, 99),
        "idle_n": len(idle), "loaded_n": len(loaded), "failed": idle_failed + loaded_failed,
    }
    idle_p99 = healthz["idle_p99_ms"]
    healthz["p99_ratio"] = round(healthz["loaded_p99_ms"] / idle_p99, 2) if idle_p99 else None
    result.update({
        "mode": "soak" if soak else "load",
        "sessions": args.sessions,
        "messages_per_session": args.messages,
        "tokens_per_s": args.tokens_per_s,
        "think_ms": args.think_ms,
        "chat": chat_s,
        "healthz": healthz,
        "lost": lost,
        "duplicated": duplicated,
        "error_samples": sorted(set(chat.get("error_details", [])))[:5],
        "resent": chat.get("resent", 0),
        "conversations": len(chat["conversations"]),
        "turns": chat["turns"],
        "handed_off": chat["handoffs"],
        "load_s": round(load_end - load_start, 1),
    })
    samples = [s for s in sampler.samples if load_start <= s["t"] <= load_end] or sampler.samples
    result["server"] = {
        "threads_max": max(s["threads"] for s in samples),
        "rss_mb_start": round(sampler.at(load_start)["rss_mb"], 1),
        "rss_mb_end": round(sampler.at(load_end)["rss_mb"], 1),
        "fds_start": sampler.at(load_start)["fds"],
        "fds_end": sampler.at(load_end)["fds"],
    }
    if "bare" in result:
        bare_p99 = result["bare"]["p99_ms"]
        result["bare_p99_ratio"] = round(chat_s["p99_ms"] / bare_p99, 2) if bare_p99 else None
    if soak:
        warm = sampler.at(load_start + args.warmup_s)
        end = sampler.at(load_end)
        hours = max(1e-9, (end["t"] - warm["t"]) / 3600)
        result.update({
            "soak_seconds": args.soak_seconds,
            "warmup_s": args.warmup_s,
            "rss_mb_after_warmup": round(warm["rss_mb"], 1),
            "rss_mb_end": round(end["rss_mb"], 1),
            "rss_growth_mb": round(end["rss_mb"] - warm["rss_mb"], 1),
            "rss_growth_mb_per_h": round((end["rss_mb"] - warm["rss_mb"]) / hours, 1),
            "fds_after_warmup": warm["fds"],
            "fds_end": end["fds"],
            "fd_growth": end["fds"] - warm["fds"],
            "threads_after_warmup": warm["threads"],
            "threads_end": end["threads"],
            # Resident memory at each tenth of the time after warm-up: a plateau, or a climb that goes on.
            "rss_mb_timeline": [
                round(sampler.at(warm["t"] + (end["t"] - warm["t"]) * i / 10)["rss_mb"], 1) for i in range(11)
            ],
        })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="the fake model's pace (0: no delay)")
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds of idle /healthz probes, before and after the load")
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="keep the sessions going this long")
    parser.add_argument("--warmup-s", type=float, default=120.0, help="soak: memory is compared from here on")
    parser.add_argument("--database-url", help="default: SQLite in a throw-away data dir")
    parser.add_argument("--bare", action="store_true", help="also run the bare FastAPI reference")
    parser.add_argument("--server-log", type=Path, help="keep the chat server's log here")
    parser.add_argument("--serve-chat", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_chat:
        _serve_chat(args.serve_chat, args.tokens_per_s)
        return
    if args.serve_bare:
        _serve_bare(args.serve_bare)
        return
    if args.probe:
        _probe(args.probe, args.probe_out)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.soak_seconds and args.warmup_s >= args.soak_seconds:
        parser.error("--warmup-s must be shorter than --soak-seconds")

    with tempfile.TemporaryDirectory(prefix="support-bot-load-") as tmp:
        chat_port, bare_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
        env.update(
            SUPPORT_BOT_DATA_DIR=str(Path(tmp) / "data"),
            SUPPORT_BOT_LLM__BACKEND="fake",
            # Every simulated customer comes from 127.0.0.1: the per-IP abuse limits would measure themselves.
            SUPPORT_BOT_WIDGET__RATE_LIMIT_ENABLED="false",
        )
        if args.database_url:
            env["SUPPORT_BOT_DATABASE_URL"] = args.database_url
        server_log_path = args.server_log or Path(tmp) / "server.log"
        probe_out = Path(tmp) / "probes.txt"
        server_log = open(server_log_path, "wb")
        me = [sys.executable, __file__]
        # The server's log goes to a file: a pipe nobody reads fills up and then blocks the server mid-request.
        server = subprocess.Popen(
            [*me, "--serve-chat", str(chat_port), "--tokens-per-s", str(args.tokens_per_s)],
            env=env, stdout=subprocess.DEVNULL, stderr=server_log,
        )
        procs = [server]
        chat_base = f"http://127.0.0.1:{chat_port}"
        bare_base = None
        try:
            if args.bare:
                procs.append(subprocess.Popen([*me, "--serve-bare", str(bare_port)], env=env))
                bare_base = f"http://127.0.0.1:{bare_port}"
            _wait_ready(f"{chat_base}/readyz", server)
            procs.append(subprocess.Popen([*me, "--probe", f"{chat_base}/healthz", "--probe-out", str(probe_out)]))
            sampler = Sampler(server.pid)
            sampler.start()
            log.info("chat server ready (pid %d)", server.pid)
            result = asyncio.run(_drive(args, chat_base, probe_out, sampler, bare_base))
            sampler.stop.set()
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
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
