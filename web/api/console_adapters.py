"""The console's Adaptation page (knowledge area, ops and admins): tune the embedder or the chat model, compare,
activate, roll back.

JSON under /api/console/adapters; the page /console/knowledge/adaptation renders both kinds' listings on the server
and adapters.js keeps it live. Which kind a request is about is its `kind` (a query parameter of the listing, a field
of the tune and rollback bodies; an activation's kind is its artifact id's), "embedder" when it is left out, so
clients written before the chat model could be tuned keep working. Tuning, activation and rollback run as jobs in a
detached process, one at a time whatever their kind (the page polls their progress); every start is written to the
audit log and needs the session's CSRF token.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator

from support_bot.adapt import artifacts, jobs, service
from support_bot.core.chat_tuning import ChatTuningSettings
from support_bot.core.config import AdaptSettings
from support_bot.core.errors import Conflict, InvalidInput
from support_bot.ops import audit
from web.api.knowledge import calibration_payload
from web.console_deps import OpsDep, console_page, csrf_protect, require_roles
from web.deps import SessionDep, SettingsDep

api = APIRouter(
    prefix="/api/console/adapters",
    tags=["console"],
    dependencies=[Depends(require_roles("ops")), Depends(csrf_protect)],
)
pages = APIRouter(prefix="/console/knowledge", tags=["console"])

RECENT_JOBS = 10
# support_bot.adapt.artifacts.KINDS as a type, so that FastAPI refuses any other kind with a 422.
Kind = Literal["embedder", "chat"]
EMBEDDER: Kind = "embedder"
CHAT: Kind = "chat"
# The backend that serves tuned chat adapters (support_bot.adapt.service.tune_chat refuses any other).
CHAT_BACKEND = "transformers"


class KindRequest(BaseModel):
    kind: Kind = EMBEDDER


class TuneRequest(KindRequest):
    epochs: int | None = Field(default=None, ge=1, le=50)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    # Chat only: train on at most this many questions (0: all), the setting adapt.chat.max_examples for this run.
    max_examples: int | None = Field(default=None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _chat_only(self) -> TuneRequest:
        if self.max_examples is not None and self.kind != CHAT:
            raise ValueError("max_examples is a setting of tuning the chat model (kind chat)")
        return self


def _start(session, settings, user, action: str, *, kind: Kind = EMBEDDER, target: str | None = None,
           params: dict | None = None):
    job = jobs.create_job(settings, action, target=target, params=params, kind=kind)
    audit.record(session, actor=user, action=f"adapters.{action}", target_type="adapter", target_id=target,
                 detail={"job_id": job["id"], "kind": job["kind"], **(params or {})})
    session.commit()
    jobs.start_job(settings, job)
    return JSONResponse({"job": job}, status_code=202)


def overview(settings, kind: Kind = EMBEDDER) -> dict:
    return {**service.list_adapters(settings, kind), "jobs": jobs.list_jobs(settings, limit=RECENT_JOBS)}


def _checked_params(settings, kind: Kind, params: dict) -> None:
    """Refuse parameters the job would refuse (a chat run allows fewer epochs), before any job is started."""
    current = settings.adapt.chat if kind == CHAT else settings.adapt
    model = ChatTuningSettings if kind == CHAT else AdaptSettings
    try:
        model.model_validate({**current.model_dump(), **params})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid tuning parameters: {problems}") from None


@api.get("")
def read_adapters(
    user: OpsDep, settings: SettingsDep, kind: Annotated[Kind, Query(description="embedder or chat")] = EMBEDDER
):
    """Tuned artifacts of a kind with their held-out figures beside the live model's, which is live, and recent
    jobs (of every kind)."""
    return overview(settings, kind)


@api.get("/jobs")
def read_adapter_jobs(user: OpsDep, settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=100)] = RECENT_JOBS):
    """Recent tuning, activation and rollback jobs of every kind, newest first, with their progress."""
    return {"jobs": jobs.list_jobs(settings, limit=limit)}


@api.get("/jobs/{job_id}")
def read_adapter_job(job_id: str, user: OpsDep, settings: SettingsDep):
    """One job: phase, progress, and its result or error (a refused activation carries the figures)."""
    return jobs.get_job(settings, job_id)


@api.post("/tune", status_code=202)
def tune_adapter(body: TuneRequest, user: OpsDep, session: SessionDep, settings: SettingsDep):
    """Start tuning the embedder or (kind chat) the chat model on the company's data (a job); the result is a new
    artifact, not yet live."""
    params = body.model_dump(exclude_none=True, exclude={"kind"})
    if body.kind == CHAT and settings.llm.backend != CHAT_BACKEND:
        raise Conflict(f"tuned chat adapters are served by the {CHAT_BACKEND} backend; llm.backend is "
                       f"{settings.llm.backend!r}")
    _checked_params(settings, body.kind, params)
    return _start(session, settings, user, "tune", kind=body.kind, params=params)


@api.post("/rollback", status_code=202)
def rollback_adapter(user: OpsDep, session: SessionDep, settings: SettingsDep, body: KindRequest | None = None):
    """Start returning to the model of the kind live before the current one (for the embedder, a job re-embedding the
    knowledge base; for the chat model, the engines switch before their next answer)."""
    kind = body.kind if body is not None else EMBEDDER
    if not service.list_adapters(settings, kind)["can_roll_back"]:
        raise Conflict(f"nothing to roll back to: the configured {'chat ' if kind == CHAT else ''}model is live")
    return _start(session, settings, user, "rollback", kind=kind)


@api.get("/{artifact_id}")
def read_adapter(artifact_id: str, user: OpsDep, settings: SettingsDep):
    """One artifact: its parameters, data counts, training figures and the comparison with the live model."""
    return artifacts.load(settings, artifact_id)


@api.post("/{artifact_id}/activate", status_code=202)
def activate_adapter(artifact_id: str, user: OpsDep, session: SessionDep, settings: SettingsDep):
    """Start activating an artifact: refused (the job fails with the figures) if it is worse than the live one."""
    return _start(session, settings, user, "activate", target=artifact_id)  # its kind is its id's


@pages.get("/adaptation", response_class=HTMLResponse)
def read_adaptation_page(request: Request, user: OpsDep, settings: SettingsDep):
    """Train, compare, activate and roll back tuned embedders and chat adapters."""
    context = {
        **overview(settings),
        "chat": service.list_adapters(settings, CHAT),
        "llm_backend": settings.llm.backend,
        "chat_backend": CHAT_BACKEND,
        "retrieval": calibration_payload(settings),
    }
    return console_page(request, "console/adaptation.html", context)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
