"""The admin settings page and API: change the bot, widget, handoff rules and model without a restart."""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from support_bot.ops import runtime_settings
from support_bot.core.errors import Conflict, InvalidInput, SupportBotError
from web.errors import http_status
from support_bot.ops.runtime_settings import EDITABLE, GROUPS, Editable
from web.console_deps import AdminUserDep, console_page, csrf_protect, no_store, require_roles
from web.deps import SessionDep

log = logging.getLogger(__name__)

# Admins only; every change needs the session's CSRF token.
router = APIRouter(tags=["console"], dependencies=[Depends(require_roles("admin")), Depends(csrf_protect)])

PAGE = "/console/settings"
NOTICES = {
    "saved": "Settings saved; they apply from the next request.",
    "reset": "Setting reset to the file/env value.",
}


def _runtime(request: Request) -> runtime_settings.RuntimeSettings:
    return request.app.state.assistant.runtime


def _model_status(request: Request) -> str:
    return getattr(request.app.state, "model_status", "loading")


def _commit(session: Session) -> None:
    try:
        session.commit()
    except IntegrityError:
        # Two admins saved the same setting for the first time at the same moment; nothing of this save is kept.
        session.rollback()
        raise Conflict("someone changed these settings at the same moment; reload and try again") from None


def _reload_model(request: Request) -> None:
    """Load the newly chosen model in the background; /readyz and this page show "loading", then ok or why not."""
    app = request.app
    app.state.model_reload = reload = object()
    app.state.model_status = "loading"

    def load() -> None:
        try:
            app.state.assistant.warm_up()
            status = "ok"
        except SupportBotError as exc:
            status = exc.detail
        except Exception as exc:  # the reason is shown on /readyz and this page; chats get a clear error meanwhile
            log.exception("the model chosen in the console failed to load")
            status = f"failed to load: {type(exc).__name__}: {exc}"
        # Only the latest choice reports: a slow load of an earlier one must not overwrite its status.
        if app.state.model_reload is reload:
            app.state.model_status = status

    threading.Thread(target=load, name="model-reload", daemon=True).start()


def _after_change(request: Request, changed: list[str]) -> None:
    if any(key.startswith("llm.") for key in changed):
        _reload_model(request)


def _listing(request: Request, session: Session) -> dict[str, Any]:
    runtime = _runtime(request)
    return {
        "groups": list(GROUPS),
        "settings": runtime_settings.describe(session, base=runtime.base),
        "model_status": _model_status(request),
        "refresh_s": runtime.refresh_s,
    }


# -- JSON API ----------------------------------------------------------------------------------------------------


@router.get("/api/console/settings")
def read_settings(request: Request, session: SessionDep, _admin: AdminUserDep):
    """Every editable setting with its value, default, file/env value, source, and who changed it when."""
    return _listing(request, session)


@router.put("/api/console/settings")
def update_settings(
    request: Request, session: SessionDep, admin: AdminUserDep, body: Annotated[dict[str, Any], Body()]
):
    """Change settings ({"chat.bot_name": "Max", ...}): all valid or none saved; each change audited."""
    runtime = _runtime(request)
    changed = runtime_settings.set_values(session, base=runtime.base, values=body, actor=admin, store=runtime)
    _commit(session)
    _after_change(request, changed)
    return {"changed": changed, **_listing(request, session)}


@router.delete("/api/console/settings/{key}")
def reset_setting(key: str, request: Request, session: SessionDep, admin: AdminUserDep):
    """Back to the file/env value (audited); resetting a setting the console never changed changes nothing."""
    runtime = _runtime(request)
    reset = runtime_settings.reset_value(session, base=runtime.base, key=key, actor=admin, store=runtime)
    _commit(session)
    if reset:
        _after_change(request, [key])
    return {"reset": reset, **_listing(request, session)}


# -- page --------------------------------------------------------------------------------------------------------


def _form_text(item: dict[str, Any]) -> str:
    """How a value sits in its form field."""
    value = item["value"]
    if item["kind"] == "list":
        return "\n".join(value)
    if value is None:
        return ""
    return str(value)


def _page(request: Request, session: Session, *, submitted: dict[str, str] | None = None, status_code: int = 200,
          **context):
    listing = _listing(request, session)
    for item in listing["settings"]:
        item["form_text"] = (submitted or {}).get(item["key"], _form_text(item))
    grouped = [(group, [i for i in listing["settings"] if i["group"] == group]) for group in listing["groups"]]
    models = []
    try:
        from support_bot.llm.pull import list_models

        models = list_models(_runtime(request).base)
    except (OSError, SupportBotError):
        models = []
    return console_page(
        request,
        "console/settings.html",
        {"grouped": grouped, "model_status": listing["model_status"], "models": models, **context},
        status_code=status_code,
    )


def _parse(spec: Editable, raw: list[str]) -> Any:
    """One form field's value in the setting's own type; bad numbers are named, everything else is validated later."""
    # Browsers send line breaks as CRLF; the stored text keeps plain newlines, so an unchanged field stays unchanged.
    text = (raw[-1] if raw else "").replace("\r\n", "\n")
    match spec.kind:
        case "bool":
            # A hidden "false" comes before the checkbox, so an unticked box still says so.
            return text == "true"
        case "list":
            return text.splitlines()
        case "int":
            try:
                return int(text.strip())
            except ValueError:
                raise InvalidInput(f"{spec.key}: must be a whole number") from None
        case "float":
            try:
                return float(text.strip())
            except ValueError:
                raise InvalidInput(f"{spec.key}: must be a number") from None
    return text


def _same(spec: Editable, new: Any, current: Any) -> bool:
    if spec.kind == "text":
        return (new or "").strip() == (current or "")
    if spec.kind == "list":
        return [v.strip() for v in new if v.strip()] == current
    return new == current


@router.get(PAGE)
def read_settings_page(request: Request, session: SessionDep, _admin: AdminUserDep, done: str = ""):
    """The settings, grouped, with what differs from the defaults and where each value comes from."""
    return _page(request, session, notice=NOTICES.get(done))


async def _form(request: Request) -> FormData:
    return await request.form()


@router.post(PAGE)
def update_settings_with_form(
    request: Request, session: SessionDep, admin: AdminUserDep, form: Annotated[FormData, Depends(_form)]
):
    """Save the fields that changed; on a bad value show the form again with what was typed and why."""
    submitted = {
        spec.key: [v for v in form.getlist(spec.key) if isinstance(v, str)] for spec in EDITABLE if spec.key in form
    }
    shown = {key: values[-1] if values else "" for key, values in submitted.items()}
    runtime = _runtime(request)
    try:
        current = {item["key"]: item["value"] for item in runtime_settings.describe(session, base=runtime.base)}
        changes = {}
        problems = []
        for spec in EDITABLE:
            if spec.key not in submitted:
                continue
            try:
                value = _parse(spec, submitted[spec.key])
            except InvalidInput as exc:
                problems.append(exc.detail)
                continue
            if not _same(spec, value, current[spec.key]):
                changes[spec.key] = value
        if problems:
            raise InvalidInput("; ".join(problems))
        changed = []
        if changes:
            changed = runtime_settings.set_values(
                session, base=runtime.base, values=changes, actor=admin, store=runtime
            )
            _commit(session)
    except SupportBotError as exc:
        session.rollback()
        return _page(request, session, submitted=shown, status_code=http_status(exc), error=exc.detail)
    _after_change(request, changed)
    return no_store(RedirectResponse(f"{PAGE}?done=saved", status_code=303))


@router.post(PAGE + "/{key}/reset")
def reset_setting_with_form(key: str, request: Request, session: SessionDep, admin: AdminUserDep):
    """Reset one setting to its file/env value."""
    runtime = _runtime(request)
    try:
        reset = runtime_settings.reset_value(session, base=runtime.base, key=key, actor=admin, store=runtime)
        _commit(session)
    except SupportBotError as exc:
        session.rollback()
        return _page(request, session, status_code=http_status(exc), error=exc.detail)
    if reset:
        _after_change(request, [key])
    return no_store(RedirectResponse(f"{PAGE}?done=reset", status_code=303))
