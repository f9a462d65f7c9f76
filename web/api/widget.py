"""The embeddable widget: the script host sites include, and the looks it reads from settings."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from web.deps import SettingsDep

router = APIRouter(tags=["widget"])

WIDGET_JS = Path(__file__).resolve().parent.parent / "static" / "widget.js"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    mtime_ns: int


_cache: dict[Path, Asset] = {}
_cache_lock = threading.Lock()


def load_asset(path: Path = WIDGET_JS) -> Asset:
    """The file with its gzip form and ETag, compressed once per version of the file."""
    mtime_ns = path.stat().st_mtime_ns
    with _cache_lock:
        asset = _cache.get(path)
        if asset is None or asset.mtime_ns != mtime_ns:
            body = path.read_bytes()
            asset = Asset(
                body=body,
                gzipped=gzip.compress(body, compresslevel=9, mtime=0),
                etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                mtime_ns=mtime_ns,
            )
            _cache[path] = asset
        return asset


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    # Weak validators match too: a proxy that re-compressed the file marks the ETag W/.
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return "*" in candidates or etag in candidates


@router.get("/widget.js", include_in_schema=False)
def read_widget_js(request: Request, settings: SettingsDep):
    """The widget script: cached by browsers for a while, then revalidated with its ETag."""
    asset = load_asset()
    headers = {
        "Cache-Control": f"public, max-age={settings.widget.script_max_age_s}",
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
        # Host pages that isolate themselves (COEP) may still load it.
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if _etag_matches(request.headers.get("if-none-match"), asset.etag):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


@router.get("/api/widget/config")
def read_widget_config(settings: SettingsDep, request: Request):
    """Title, greeting, colours and the rest of the widget's looks, from settings.

    Browsers keep it but ask again each time (a 304 while nothing changed), so a change made on the console's
    settings page reaches the next page a customer opens.
    """
    widget, chat = settings.widget, settings.chat
    config = {
        "title": widget.title or f"{chat.company_name} support",
        "greeting": widget.greeting,
        "launcher_label": widget.launcher_label,
        "position": widget.position,
        "primary_color": widget.primary_color,
        "text_color": widget.text_color,
        "avatar_url": widget.avatar_url,
        "bot_name": chat.bot_name,
        "company": chat.company_name,
        "handoff_enabled": settings.handoff.button_enabled,
        "max_message_chars": chat.max_message_chars,
    }
    body = json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Cache-Control": "no-cache", "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"'}
    if _etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
