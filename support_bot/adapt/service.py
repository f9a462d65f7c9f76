"""What the CLI and the console call: tune an embedder, list adapters, activate one through the gate, roll back."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable

from support_bot.adapt import activation, artifacts, data, gate, trainer
from support_bot.core.config import AdaptSettings, Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, InvalidInput
from support_bot.knowledge.embedder import (
    EMBEDDER_KIND,
    get_embedder,
    resolve_model_dir,
    serving_artifact,
)
from support_bot.knowledge.index import read_current_version

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class GateRefused(Conflict):
    """The artifact is worse than the live one on the held-out slice; `evaluation` holds the figures."""

    def __init__(self, detail: str, evaluation: dict):
        super().__init__(detail)
        self.evaluation = evaluation


def live_artifact(settings: Settings) -> str | None:
    """The embedder artifact the live index version is searched with (None: the configured model)."""
    return serving_artifact(artifacts.read_state(settings), read_current_version(settings.index_dir))


def _split(settings: Settings, cfg: AdaptSettings) -> data.Split:
    with session_scope(settings) as session:
        examples = data.collect(session, settings)
    return data.split(examples, cfg)


def compare(settings: Settings, artifact_id: str, split: data.Split, *, progress: Progress | None = None) -> dict:
    """The artifact and the live embedder evaluated on the same held-out slice in one run, with the gate's verdict."""
    live = live_artifact(settings)
    cache: dict = {}
    live_figures = gate.evaluate(get_embedder(settings, live), split, settings, cache=cache, progress=progress,
                                 phase="evaluating the live embedder")
    figures = gate.evaluate(get_embedder(settings, artifact_id), split, settings, progress=progress,
                            phase="evaluating the tuned embedder")
    return {
        "live_artifact": live,
        "live": live_figures,
        "candidate": figures,
        "verdict": gate.verdict(live_figures, figures, settings.adapt.gate_tolerance),
        "fingerprint": split.fingerprint,
        "at": artifacts.now_iso(),
    }


def tune_embedder(settings: Settings, *, progress: Progress | None = None, overrides: dict | None = None) -> dict:
    """Train a tuned embedder on the company's data, evaluate it against the live one, store it as an artifact.

    -> the artifact's record (id, figures, verdict). Activating it is a separate step (activate()).
    """
    try:
        cfg = AdaptSettings.model_validate({**settings.adapt.model_dump(), **(overrides or {})})
    except ValueError as exc:
        raise InvalidInput(f"invalid tuning parameters: {exc}") from None
    settings = settings.model_copy(update={"adapt": cfg})
    split = _split(settings, cfg)
    artifact_id, root = artifacts.create(
        settings, EMBEDDER_KIND,
        {"status": "training", "base_model": settings.embedding.model, "params": cfg.model_dump(), "data": split.counts},
    )
    staging = root / "model.tmp"
    try:
        cache: dict = {}
        negatives = gate.mine_negatives(settings, split, cache=cache, progress=progress) if cfg.hard_negatives else {}
        stats = trainer.train(
            resolve_model_dir(settings.embedding.model), staging, split.train, negatives, cfg,
            device=settings.embedding.device, progress=progress,
        )
        stats["hard_negatives"] = len(negatives)
        os.rename(staging, root / artifacts.MODEL_DIR)
        evaluation = compare(settings, artifact_id, split, progress=progress)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        artifacts.remove_model(settings, artifact_id)
        artifacts.update(settings, artifact_id, status="failed", error=str(getattr(exc, "detail", exc)) or type(exc).__name__)
        raise
    log.info("tuned embedder %s: %s", artifact_id, gate.describe(evaluation["verdict"]))
    return artifacts.update(settings, artifact_id, status="ready", train=stats, evaluation=evaluation)


def list_adapters(settings: Settings, kind: str = EMBEDDER_KIND) -> dict:
    """The adapters of a kind, newest first, with which is live and what rollback would return to."""
    state = artifacts.read_state(settings, kind)
    live = live_artifact(settings) if kind == EMBEDDER_KIND else artifacts.active(state)
    history = state.get("history") or []
    records = []
    for record in artifacts.list_records(settings, kind):
        record["live"] = record["id"] == live
        record["size_bytes"] = artifacts.size_bytes(settings, record["id"])
        records.append(record)
    return {
        "kind": kind,
        "base_model": settings.embedding.model,
        "live": live,
        "rollback_to": history[-2] if len(history) >= 2 else None,
        "can_roll_back": len(history) >= 2,
        "artifacts": records,
    }


def activate(settings: Settings, artifact_id: str, *, progress: Progress | None = None) -> dict:
    """Make an artifact live if the gate lets it: re-embed the knowledge base with it into a new index version.

    The comparison stored at tuning is reused when it was made against the embedder live now on the same data;
    otherwise both are evaluated again. A worse artifact raises GateRefused with the figures.
    """
    kind = artifacts.parse_id(artifact_id)
    record = artifacts.load(settings, artifact_id)
    if record.get("status") != "ready":
        raise Conflict(f"{artifact_id} is {record.get('status')}, not ready; only a tuned, evaluated artifact goes live")
    state = artifacts.read_state(settings, kind)
    if live_artifact(settings) == artifact_id and artifacts.active(state) == artifact_id:
        raise Conflict(f"{artifact_id} is already live")
    cfg = AdaptSettings.model_validate({**settings.adapt.model_dump(), **_split_params(record)})
    split = _split(settings, cfg)
    evaluation = record.get("evaluation") or {}
    if evaluation.get("live_artifact") != live_artifact(settings) or evaluation.get("fingerprint") != split.fingerprint:
        evaluation = compare(settings, artifact_id, split, progress=progress)
        record = artifacts.update(settings, artifact_id, evaluation=evaluation)
    evaluation["verdict"] = gate.verdict(evaluation["live"], evaluation["candidate"], settings.adapt.gate_tolerance)
    if not evaluation["verdict"]["passed"]:
        raise GateRefused(f"{artifact_id} was not activated: {gate.describe(evaluation['verdict'])}", evaluation)
    history = [*(state.get("history") or [None]), artifact_id]
    result = activation.switch(settings, artifact_id, history=history, progress=progress)
    artifacts.update(settings, artifact_id, activated_at=artifacts.now_iso())
    return {**result, "evaluation": evaluation}


def _split_params(record: dict) -> dict:
    """The held-out parameters the artifact was tuned with, so it is judged on the slice it never saw."""
    params = record.get("params") or {}
    keys = ("seed", "heldout_fraction", "heldout_max", "abstain_fraction", "abstain_max")
    return {k: params[k] for k in keys if k in params}


def rollback(settings: Settings, kind: str = EMBEDDER_KIND, *, progress: Progress | None = None) -> dict:
    """Return to the embedder that was live before the current one (the configured model at the start)."""
    artifacts.kind_dir(settings, kind)
    history = artifacts.read_state(settings, kind).get("history") or []
    if len(history) < 2:
        raise Conflict("nothing to roll back to: the configured model is live")
    target = history[-2]
    result = activation.switch(settings, target, history=history[:-1], progress=progress)
    return {**result, "rolled_back_from": history[-1]}
