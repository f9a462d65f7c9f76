"""Settings changed in the console: a whitelist of editable keys, their validation, and the per-process view.

The file/env Settings stay the base. Rows of `runtime_settings` (key = dotted path, JSON value) override single
fields of it; every web process sees a change at once in the process that made it and within
`console.settings_refresh_s` everywhere else, so nothing needs a restart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from support_bot.ops import audit
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, NotFound, SupportBotError
from support_bot.handoff.queue import QueueInfo
from support_bot.handoff.texts import handoff_text
from support_bot.models import RuntimeSetting, User, utcnow

log = logging.getLogger(__name__)

Kind = Literal["text", "bool", "int", "float", "choice", "list"]

# A list setting (phrases, origins) holds at most this many entries of at most this many characters each.
MAX_LIST_ITEMS = 200
MAX_LIST_ITEM_CHARS = 200


@dataclass(frozen=True)
class Editable:
    """One setting the console may change. Validation is the Settings field's own, plus the bounds given here."""

    key: str
    group: str
    label: str
    help: str = ""
    # A bound for free text whose Settings field has none (it ends up in every prompt or on customers' pages).
    max_chars: int | None = None
    multiline: bool = False
    # Empty text is a real value here (e.g. no extra instructions); elsewhere it is refused.
    allow_empty: bool = False

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def annotation(self) -> Any:
        return _section_class(self.section).model_fields[self.name].annotation

    @property
    def optional(self) -> bool:
        return type(None) in _args(self.annotation)

    @property
    def kind(self) -> Kind:
        inner = [a for a in _args(self.annotation) if a is not type(None)]
        base = inner[0] if len(inner) == 1 else self.annotation
        if typing.get_origin(base) is Literal:
            return "choice"
        if typing.get_origin(base) is list:
            return "list"
        return {bool: "bool", int: "int", float: "float"}.get(base, "text")

    @property
    def choices(self) -> list[str]:
        inner = [a for a in _args(self.annotation) if a is not type(None)]
        base = inner[0] if len(inner) == 1 else self.annotation
        return [str(c) for c in typing.get_args(base)] if typing.get_origin(base) is Literal else []

    def default(self) -> Any:
        """The value when neither the file/env nor the console sets it."""
        field = _section_class(self.section).model_fields[self.name]
        return to_jsonable_python(field.get_default(call_default_factory=True))


def _section_class(section: str) -> type[BaseModel]:
    return Settings.model_fields[section].annotation


def _args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


EDITABLE: tuple[Editable, ...] = (
    Editable("chat.company_name", "Bot", "Company name", "Used in the prompt and in the widget's default title.",
             max_chars=100),
    Editable("chat.bot_name", "Bot", "Bot name", "What the assistant calls itself.", max_chars=80),
    Editable("chat.tone", "Bot", "Tone", "For example: friendly, concise and professional.", max_chars=200),
    Editable("chat.system_prompt", "Bot", "Extra instructions",
             "Added to the system prompt before the sources. The bot still answers only from the knowledge base.",
             multiline=True, allow_empty=True),
    Editable("widget.title", "Widget", "Title", "Empty: \"<company name> support\"."),
    Editable("widget.greeting", "Widget", "Greeting", "The first message a customer sees.", multiline=True),
    Editable("widget.launcher_label", "Widget", "Launcher label"),
    Editable("widget.position", "Widget", "Position", "The corner the launcher sits in."),
    Editable("widget.primary_color", "Widget", "Primary colour", "A hex colour such as #2457d6."),
    Editable("widget.text_color", "Widget", "Text colour", "Written on top of the primary colour."),
    Editable("widget.avatar_url", "Widget", "Avatar URL", "An http(s) image, square, at least 64 px. Empty: none."),
    Editable("widget.allowed_origins", "Widget", "Allowed sites",
             "One origin per line, such as https://www.example.com; * allows any site. Empty: this server only."),
    Editable("handoff.request_enabled", "Handoff", "Hand off when the customer asks for a person"),
    Editable("handoff.request_phrases", "Handoff", "Extra phrases that ask for a person", "One phrase per line."),
    Editable("handoff.button_enabled", "Handoff", "Show the \"talk to a person\" button"),
    Editable("handoff.abstain_enabled", "Handoff", "Hand off after repeated \"I don't know\""),
    Editable("handoff.abstain_streak", "Handoff", "\"I don't know\" answers in a row before a handoff"),
    Editable("handoff.sentiment_enabled", "Handoff", "Hand off on negative sentiment"),
    Editable("handoff.sentiment_threshold", "Handoff", "Sentiment threshold", "0 to 1; lower hands off sooner."),
    Editable("handoff.safety_enabled", "Handoff", "Hand off on safety policies whose action is handoff"),
    Editable("handoff.max_turns_enabled", "Handoff", "Hand off after many bot answers"),
    Editable("handoff.max_bot_turns", "Handoff", "Bot answers before a handoff"),
    Editable("handoff.minutes_per_position", "Handoff", "Estimated minutes per place in the queue"),
    Editable("handoff.connecting_text", "Handoff", "Connecting message",
             "{position}, {wait} and {company} are filled in.", max_chars=1000, multiline=True),
    Editable("handoff.offline_text", "Handoff", "Nobody-online message", "{company} is filled in.",
             max_chars=1000, multiline=True),
    Editable("handoff.offline_received_text", "Handoff", "Message-received message",
             "Shown once the customer left a message with nobody online; {company} is filled in.",
             max_chars=1000, multiline=True),
    Editable("llm.backend", "Model", "Backend",
             "transformers: a local model; openai: an OpenAI-compatible server; fake: tests only."),
    Editable("llm.model", "Model", "Model",
             "A preset (see `support-bot models list`), a local model directory or a local .gguf file."),
)
EDITABLE_BY_KEY: dict[str, Editable] = {spec.key: spec for spec in EDITABLE}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(spec.group for spec in EDITABLE))


def editable(key: str) -> Editable:
    """The whitelist entry for `key`, or NotFound."""
    spec = EDITABLE_BY_KEY.get(key)
    if spec is None:
        raise NotFound(f"{key!r} is not a setting that can be changed in the console")
    return spec


def value_of(settings: Settings, key: str) -> Any:
    """A setting's value as JSON (what is stored, shown and compared)."""
    section, name = key.split(".", 1)
    return to_jsonable_python(getattr(getattr(settings, section), name))


# --- validation -----------------------------------------------------------------------------------------------------


def _normalize(spec: Editable, value: Any) -> Any:
    """Shape checks and trimming that the Settings field itself does not do."""
    kind = spec.kind
    if kind == "text":
        if value is None or (isinstance(value, str) and not value.strip()):
            if spec.optional:
                return None
            if spec.allow_empty:
                return ""
            raise InvalidInput(f"{spec.key}: cannot be empty")
        if not isinstance(value, str):
            raise InvalidInput(f"{spec.key}: must be text")
        value = value.strip()
        if spec.max_chars is not None and len(value) > spec.max_chars:
            raise InvalidInput(f"{spec.key}: at most {spec.max_chars} characters (got {len(value)})")
        return value
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{spec.key}: must be a list of texts")
        items = list(dict.fromkeys(v.strip() for v in value if v.strip()))
        if len(items) > MAX_LIST_ITEMS:
            raise InvalidInput(f"{spec.key}: at most {MAX_LIST_ITEMS} entries (got {len(items)})")
        long = next((v for v in items if len(v) > MAX_LIST_ITEM_CHARS), None)
        if long is not None:
            raise InvalidInput(f"{spec.key}: each entry has at most {MAX_LIST_ITEM_CHARS} characters")
        return items
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"{spec.key}: must be true or false")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{spec.key}: must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{spec.key}: must be a finite number")
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{spec.key}: must be one of {', '.join(spec.choices)}")
    return value


def _messages(section: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        out.append(f"{section}.{loc}: {msg}" if loc else f"{section}: {msg}")
    return out


def _validated_section(current: BaseModel, changes: dict[str, Any]) -> BaseModel:
    """`current` with `changes`, checked by the section's own model (field and model validators)."""
    checked = type(current).model_validate({**current.model_dump(), **changes})
    values = {name: getattr(checked, name) for name in changes}
    # Lists once more without repeats: the field's validator may have made two entries equal (case, a "/").
    values = {name: list(dict.fromkeys(v)) if isinstance(v, list) else v for name, v in values.items()}
    # A copy of the original keeps everything else as it is (fields set by file/env, values set in code).
    return current.model_copy(update=values)


def apply_overrides(base: Settings, values: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
    """Base settings deep-updated with stored overrides; overrides that no longer validate are skipped (with why)."""
    by_section: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for key, value in values.items():
        if key not in EDITABLE_BY_KEY:
            skipped[key] = "not a setting that can be changed in the console"
            continue
        section, name = key.split(".", 1)
        by_section.setdefault(section, {})[name] = value
    updates: dict[str, BaseModel] = {}
    for section, changes in by_section.items():
        current = getattr(base, section)
        try:
            updates[section] = _validated_section(current, changes)
            continue
        except ValidationError:
            pass
        good: dict[str, Any] = {}
        for name, value in changes.items():
            try:
                _validated_section(current, {**good, name: value})
                good[name] = value
            except ValidationError as exc:
                skipped[f"{section}.{name}"] = "; ".join(_messages(section, exc))
        if good:
            updates[section] = _validated_section(current, good)
    for key, why in skipped.items():
        log.warning("console setting %s is not applied: %s", key, why)
    return (base.model_copy(update=updates) if updates else base), skipped


def check_model(settings: Settings) -> None:
    """Refuse a backend/model pair that cannot answer: an unknown or missing model, an unusable backend."""
    llm = settings.llm
    match llm.backend:
        case "transformers":
            from support_bot.llm.pull import resolve_model

            try:
                resolve_model(settings)
            except SupportBotError as exc:
                raise InvalidInput(f"llm.model: {exc.detail}") from exc
            except Exception as exc:  # an unreadable local file (e.g. a damaged GGUF header) is refused too
                raise InvalidInput(f"llm.model: cannot read {llm.model}: {type(exc).__name__}: {exc}") from exc
        case "openai":
            if not llm.openai_model:
                raise InvalidInput(
                    "llm.backend: the openai backend needs SUPPORT_BOT_LLM__OPENAI_MODEL (the model name the "
                    "server serves) in the server's configuration"
                )
        case "fake":
            if settings.env == "production":
                raise InvalidInput("llm.backend: the fake backend is for tests and development only")


def _check(candidate: Settings, keys: set[str]) -> None:
    if any(key.startswith("llm.") for key in keys):
        check_model(candidate)
    samples = {  # the queue states in which each text is shown, and whether a message was left
        "handoff.connecting_text": (QueueInfo(status="queued", position=1, eta_s=120, agents_online=1), False),
        "handoff.offline_text": (QueueInfo(status="offline"), False),
        "handoff.offline_received_text": (QueueInfo(status="offline"), True),
    }
    for key, (info, left) in samples.items():
        if key in keys:
            try:
                handoff_text(candidate, info, offline_message=left)
            except (ValueError, IndexError, KeyError, AttributeError) as exc:
                raise InvalidInput(
                    f"{key}: cannot be filled in ({exc}); use {{position}}, {{wait}} and {{company}}, and write "
                    "{{ and }} for literal braces"
                ) from exc


def validate_changes(current: Settings, values: dict[str, Any]) -> tuple[Settings, dict[str, Any]]:
    """Check changes against a copy of the settings with them applied -> (that copy, the values as stored)."""
    normalized: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        spec = EDITABLE_BY_KEY.get(key)
        if spec is None:
            problems.append(f"{key}: not a setting that can be changed in the console")
            continue
        try:
            normalized[key] = _normalize(spec, value)
        except InvalidInput as exc:
            problems.append(exc.detail)
    if problems:
        raise InvalidInput("; ".join(problems))
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in normalized.items():
        section, name = key.split(".", 1)
        by_section.setdefault(section, {})[name] = value
    updates = {}
    for section, changes in by_section.items():
        try:
            updates[section] = _validated_section(getattr(current, section), changes)
        except ValidationError as exc:
            problems.extend(_messages(section, exc))
    if problems:
        raise InvalidInput("; ".join(problems))
    candidate = current.model_copy(update=updates) if updates else current
    _check(candidate, set(normalized))
    return candidate, {key: value_of(candidate, key) for key in normalized}


# --- the per-process view -------------------------------------------------------------------------------------------


def _database_missing(settings: Settings) -> bool:
    url = settings.resolved_database_url
    return url.startswith("sqlite") and not Path(url.split("///", 1)[1]).exists()


def load_overrides(session: Session) -> dict[str, RuntimeSetting]:
    """Every stored override, by key."""
    return {row.key: row for row in session.scalars(select(RuntimeSetting))}


class RuntimeSettings:
    """Effective settings for one process: base settings with the console's overrides, cached and refreshed."""

    def __init__(self, base: Settings, *, refresh_s: float | None = None) -> None:
        self.base = base
        self.refresh_s = base.console.settings_refresh_s if refresh_s is None else refresh_s
        self._lock = threading.Lock()
        self._values: dict[str, Any] | None = None
        self._effective = base
        self._skipped: dict[str, str] = {}
        self._checked_at = -math.inf
        # Bumped by invalidate(): a reload that began before a change cannot mark the cache fresh after it.
        self._generation = 0
        self._loaded_once = False

    def due(self) -> bool:
        """Whether the next current() reads the database."""
        return time.monotonic() - self._checked_at >= self.refresh_s

    def invalidate(self) -> None:
        """Read the overrides again on the next current() (a change was committed in this process)."""
        with self._lock:
            self._generation += 1
            self._checked_at = -math.inf

    def current(self) -> Settings:
        """The effective settings; reads the database at most every refresh_s seconds, or right after a change."""
        if self.due():
            with self._lock:
                if self.due():
                    self._reload()
        return self._effective

    @property
    def skipped(self) -> dict[str, str]:
        """Stored overrides not applied because they no longer validate (key -> why)."""
        return dict(self._skipped)

    def _reload(self) -> None:
        generation = self._generation
        try:
            if _database_missing(self.base):
                values: dict[str, Any] = {}
            else:
                with session_scope(self.base) as session:
                    values = {key: row.value for key, row in load_overrides(session).items()}
        except SQLAlchemyError as exc:
            # Before the first migration the table does not exist; later, a database outage keeps the last view.
            level = logging.WARNING if self._loaded_once else logging.DEBUG
            log.log(level, "could not read console settings, keeping the last ones: %s", exc)
            self._checked_at = time.monotonic()
            return
        self._loaded_once = True
        if values != self._values:
            self._effective, self._skipped = apply_overrides(self.base, values) if values else (self.base, {})
            self._values = values
        if generation == self._generation:
            self._checked_at = time.monotonic()


# --- changes (audited) ----------------------------------------------------------------------------------------------


def _stored_effective(
    session: Session, base: Settings
) -> tuple[Settings, dict[str, RuntimeSetting], dict[str, str]]:
    """The effective settings as this transaction sees them (not the cache), the rows and the skipped keys."""
    rows = load_overrides(session)
    effective, skipped = apply_overrides(base, {key: row.value for key, row in rows.items()})
    return effective, rows, skipped


def _refresh_after_commit(session: Session, store: RuntimeSettings | None) -> None:
    if store is not None:
        event.listen(session, "after_commit", lambda _session: store.invalidate(), once=True)


def set_values(
    session: Session,
    *,
    base: Settings,
    values: dict[str, Any],
    actor: User | None,
    store: RuntimeSettings | None = None,
) -> list[str]:
    """Validate all changes together, store them and audit each (old -> new); the keys that changed.

    Nothing is written unless every value is valid. Values equal to the current ones are left alone. `store`, when
    given, applies the change in this process as soon as the caller commits.
    """
    if not values:
        raise InvalidInput("no settings to change")
    current, rows, _ = _stored_effective(session, base)
    _, stored = validate_changes(current, values)
    changed = []
    for key, new in stored.items():
        old = value_of(current, key)
        if new == old:
            continue
        row = rows.get(key)
        if row is None:
            session.add(RuntimeSetting(key=key, value=new, updated_by=actor.id if actor else None, updated_at=utcnow()))
        else:
            row.value, row.updated_by, row.updated_at = new, actor.id if actor else None, utcnow()
        # Only whitelisted, non-secret settings are editable, so old and new values are safe to keep in the log.
        audit.record(
            session, actor=actor, action="setting.change", target_type="setting", target_id=key,
            detail={"old": old, "new": new},
        )
        changed.append(key)
    if changed:
        session.flush()
        _refresh_after_commit(session, store)
    return changed


def reset_value(
    session: Session, *, base: Settings, key: str, actor: User | None, store: RuntimeSettings | None = None
) -> bool:
    """Drop the console's value of `key`, back to the file/env one (audited); False when it had none."""
    editable(key)
    current, rows, _ = _stored_effective(session, base)
    row = rows.get(key)
    if row is None:
        return False
    remaining = {k: r.value for k, r in rows.items() if k != key}
    candidate, _ = apply_overrides(base, remaining)
    if key.startswith("llm."):
        try:
            check_model(candidate)
        except InvalidInput as exc:
            raise InvalidInput(f"resetting {key} leaves a model that cannot answer: {exc.detail}") from exc
    old = value_of(current, key)
    session.delete(row)
    audit.record(
        session, actor=actor, action="setting.reset", target_type="setting", target_id=key,
        detail={"old": old, "new": value_of(candidate, key)},
    )
    session.flush()
    _refresh_after_commit(session, store)
    return True


def describe(session: Session, *, base: Settings) -> list[dict[str, Any]]:
    """Every editable setting: value, default, file/env value, source (default, file-env, console), who and when."""
    effective, rows, skipped = _stored_effective(session, base)
    user_ids = {row.updated_by for row in rows.values() if row.updated_by}
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    items = []
    for spec in EDITABLE:
        default, file_value = spec.default(), value_of(base, spec.key)
        row = rows.get(spec.key)
        applied = row is not None and spec.key not in skipped
        if applied:
            source = "console"
        else:
            source = "file-env" if file_value != default else "default"
        who = users.get(row.updated_by) if row is not None and row.updated_by else None
        value = value_of(effective, spec.key)
        items.append(
            {
                "key": spec.key,
                "group": spec.group,
                "label": spec.label,
                "help": spec.help,
                "kind": spec.kind,
                "optional": spec.optional,
                "multiline": spec.multiline,
                "choices": spec.choices,
                "value": value,
                "default": default,
                "file_value": file_value,
                "source": source,
                "differs_from_default": value != default,
                "updated_by": (who.display_name or who.username) if who is not None else None,
                "updated_at": row.updated_at.isoformat() if row is not None and row.updated_at else None,
                "not_applied": skipped.get(spec.key),
            }
        )
    return items
