"""Small JSON state files that name what is live (the tuned embedder, the tuned chat adapter), read on hot paths."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

_cache: dict[Path, tuple[tuple[int, int, int], dict]] = {}
_lock = threading.Lock()


def read_state(path: Path) -> dict:
    """The file's JSON object ({} when there is none): a stat per call, a read only when the file changed.

    Writers replace the file with os.replace, so every change is a new inode and no reader sees it half-written."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    seen = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _cache.get(path)
    if cached is not None and cached[0] == seen:
        return cached[1]
    state = json.loads(path.read_text(encoding="utf-8"))
    with _lock:
        _cache[path] = (seen, state)
    return state
