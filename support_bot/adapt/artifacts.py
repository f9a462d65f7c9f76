"""The artifact store: <data_dir>/adapters/<kind>/<kind>-NNNN/ (artifact.json + model/), and the state file.

An artifact's files never change once it is ready, except its artifact.json record (figures, status). The state
file (knowledge.embedder reads the embedder's on every search, the chat engine the chat model's before every answer,
both by stat) is changed under a lock and replaced atomically:
    ingest   (embedder) the artifact new chunks are embedded with (None: the configured model)
    serving  (embedder) [[first index version, artifact], ...]: which model each index version's vectors came from
    history  artifacts activated in order, the live one last; rollback returns to the one before it
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput, NotFound
from support_bot.knowledge.embedder import (
    ARTIFACT_FILE,
    EMBEDDER_KIND,
    STATE_FILE,
    embedder_adapters_dir,
    read_embedder_state,
)
from support_bot.llm.adapters import CHAT_KIND, chat_adapters_dir, read_chat_state

# Kinds of adapter; each has its own directory, numbering and state file.
KINDS = (EMBEDDER_KIND, CHAT_KIND)
ARTIFACT_ID = re.compile(r"(?P<kind>[a-z]+)-(?P<number>\d{4,})")
MODEL_DIR = "model"
# Switches kept in the state file: readers only ever need the last few (a reader lags one version behind at most).
_KEEP_SERVING = 20


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def kind_dir(settings: Settings, kind: str) -> Path:
    if kind not in KINDS:
        raise InvalidInput(f"unknown adapter kind {kind!r}; one of: {', '.join(KINDS)}")
    return embedder_adapters_dir(settings) if kind == EMBEDDER_KIND else chat_adapters_dir(settings)


def parse_id(artifact_id: str) -> str:
    """The kind of a well-formed artifact id; InvalidInput for anything else (ids become paths)."""
    m = ARTIFACT_ID.fullmatch(artifact_id or "")
    if m is None or m["kind"] not in KINDS:
        raise InvalidInput(f"{artifact_id!r} is not an adapter id such as {EMBEDDER_KIND}-0001 or {CHAT_KIND}-0001")
    return m["kind"]


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def create(settings: Settings, kind: str, record: dict) -> tuple[str, Path]:
    """A new artifact directory with the next number and its record; -> (id, directory)."""
    root = kind_dir(settings, kind)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(m["number"]) for p in root.iterdir() if (m := ARTIFACT_ID.fullmatch(p.name)) and m["kind"] == kind]
        artifact_id = f"{kind}-{max(numbers, default=0) + 1:04d}"
        try:
            (root / artifact_id).mkdir()
            break
        except FileExistsError:
            continue  # another process took this number a moment ago
    record = {"id": artifact_id, "kind": kind, "created_at": now_iso(), **record}
    _write_json(root / artifact_id / ARTIFACT_FILE, record)
    return artifact_id, root / artifact_id


def load(settings: Settings, artifact_id: str) -> dict:
    kind = parse_id(artifact_id)
    path = kind_dir(settings, kind) / artifact_id / ARTIFACT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no adapter {artifact_id}") from None


def update(settings: Settings, artifact_id: str, **values) -> dict:
    record = load(settings, artifact_id)
    record.update(values)
    _write_json(kind_dir(settings, parse_id(artifact_id)) / artifact_id / ARTIFACT_FILE, record)
    return record


def remove_model(settings: Settings, artifact_id: str) -> None:
    shutil.rmtree(kind_dir(settings, parse_id(artifact_id)) / artifact_id / MODEL_DIR, ignore_errors=True)


def list_records(settings: Settings, kind: str) -> list[dict]:
    """Every artifact of a kind, newest first."""
    root = kind_dir(settings, kind)
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if ARTIFACT_ID.fullmatch(p.name) and (p / ARTIFACT_FILE).is_file():
                out.append(json.loads((p / ARTIFACT_FILE).read_text(encoding="utf-8")))
    return sorted(out, key=lambda r: r["id"], reverse=True)


def size_bytes(settings: Settings, artifact_id: str) -> int:
    root = kind_dir(settings, parse_id(artifact_id)) / artifact_id / MODEL_DIR
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


# -- state --------------------------------------------------------------------------------------------------------


def read_state(settings: Settings, kind: str = EMBEDDER_KIND) -> dict:
    if kind == EMBEDDER_KIND:
        return dict(read_embedder_state(settings))
    kind_dir(settings, kind)  # refuses an unknown kind
    return dict(read_chat_state(settings))


def active(state: dict) -> str | None:
    """The live artifact (None: the configured model)."""
    history = state.get("history") or []
    return history[-1] if history else None


@contextmanager
def state_lock(settings: Settings, kind: str) -> Iterator[None]:
    root = kind_dir(settings, kind)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".state.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def change_state(settings: Settings, kind: str, change: Callable[[dict], dict]) -> dict:
    """Read, change and atomically replace the kind's state file under its lock; -> the new state."""
    with state_lock(settings, kind):
        path = kind_dir(settings, kind) / STATE_FILE
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        new = change(dict(state))
        new["serving"] = (new.get("serving") or [])[-_KEEP_SERVING:]
        new["updated_at"] = now_iso()
        _write_json(path, new)
        return new
