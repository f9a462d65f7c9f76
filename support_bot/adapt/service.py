"""What the CLI and the console call: tune an embedder or the chat model, list adapters, activate one through the
gate, roll back."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable

from support_bot.adapt import activation, artifacts, chat_gate, data, gate, trainer
from support_bot.core.chat_tuning import ChatTuningSettings
from support_bot.core.config import AdaptSettings, Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, ConfigurationError, InvalidInput
from support_bot.knowledge.embedder import (
    EMBEDDER_KIND,
    get_embedder,
    TRAINED_FILE,
    resolve_model_dir,
    serving_artifact,
)
from support_bot.knowledge.calibration import text_key
from support_bot.knowledge.index import read_current_version
from support_bot.llm.adapters import CHAT_KIND

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
        # Retrieval calibration never asks the questions the artifact learned (knowledge.calibration).
        trained = sorted({text_key(e.question) for e in split.train})
        (root / TRAINED_FILE).write_text(json.dumps({"questions": trained}), encoding="utf-8")
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
    base = settings.embedding.model if kind == EMBEDDER_KIND else _effective(settings).llm.model
    history = state.get("history") or []
    records = []
    for record in artifacts.list_records(settings, kind):
        record["live"] = record["id"] == live
        record["size_bytes"] = artifacts.size_bytes(settings, record["id"])
        records.append(record)
    return {
        "kind": kind,
        "base_model": base,
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
    if kind == CHAT_KIND:
        return _activate_chat(_effective(settings), artifact_id, record, progress=progress)
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
    """Return to the model that was live before the current one (the configured model at the start)."""
    artifacts.kind_dir(settings, kind)
    if kind == CHAT_KIND:
        return _rollback_chat(settings)
    history = artifacts.read_state(settings, kind).get("history") or []
    if len(history) < 2:
        raise Conflict("nothing to roll back to: the configured model is live")
    target = history[-2]
    result = activation.switch(settings, target, history=history[:-1], progress=progress)
    return {**result, "rolled_back_from": history[-1]}


# -- the chat model -------------------------------------------------------------------------------------------------


def _effective(settings: Settings) -> Settings:
    """The settings live chat answers with: the console's changes (company name, tone, model) applied."""
    from support_bot.ops.runtime_settings import RuntimeSettings

    return RuntimeSettings(settings).current()


def _chat_engine(settings: Settings, adapter: str | None):
    """A transformers engine serving `adapter` (None: the configured model as shipped) and nothing else."""
    from support_bot.llm.backends.hf.engine import TransformersEngine

    return TransformersEngine(settings, adapter=adapter)


def compare_chat(
    settings: Settings, artifact_id: str, split: data.Split, *, progress: Progress | None = None, make_engine=None
) -> dict:
    """The tuned and the live chat model answering the same held-out questions in one run, with the gate's verdict.

    `make_engine(settings, adapter)` loads a model serving one adapter (tests pass a tiny model's).
    """
    make_engine = make_engine or _chat_engine
    live = artifacts.active(artifacts.read_state(settings, CHAT_KIND))
    questions = chat_gate.gate_questions(split, settings.adapt.chat)
    embedder = get_embedder(settings, live_artifact(settings))
    figures: dict[str, dict] = {}
    with chat_gate.scratch_kb(settings, split, embedder, progress=progress) as scratch:
        for label, adapter in (("live", live), ("candidate", artifact_id)):
            engine = make_engine(settings, adapter)
            which = "tuned" if label == "candidate" else "live"
            try:
                figures[label] = chat_gate.evaluate(
                    scratch, engine, embedder, questions, progress=progress,
                    phase=f"answering held-out questions with the {which} model",
                )
            finally:
                close = getattr(engine, "close", None)
                if callable(close):
                    close()
    return {
        "live_artifact": live,
        "live": figures["live"],
        "candidate": figures["candidate"],
        "verdict": chat_gate.verdict(figures["live"], figures["candidate"], settings.adapt.gate_tolerance),
        "questions": len(questions),
        "fingerprint": split.fingerprint,
        "at": artifacts.now_iso(),
    }


def tune_chat(
    settings: Settings, *, progress: Progress | None = None, overrides: dict | None = None, make_engine=None
) -> dict:
    """LoRA-tune the configured chat model on the company's data, evaluate it against the live one, store it.

    -> the artifact's record (id, figures, verdict). `overrides` are settings.adapt.chat values for this run.
    Activating it is a separate step (activate()).
    """
    from support_bot.adapt import chat_data, chat_trainer
    from support_bot.llm.backends.hf.engine import _limit_cpu_threads, pick_device, pick_dtype
    from support_bot.llm.pull import resolve_model
    from support_bot.llm.weights import load_model

    settings = _effective(settings)
    try:
        chat = ChatTuningSettings.model_validate({**settings.adapt.chat.model_dump(), **(overrides or {})})
    except ValueError as exc:
        raise InvalidInput(f"invalid tuning parameters: {exc}") from None
    cfg = settings.adapt.model_copy(update={"chat": chat})
    settings = settings.model_copy(update={"adapt": cfg})
    if settings.llm.backend != "transformers":
        raise ConfigurationError(
            f"tuned chat adapters are served by the transformers backend; llm.backend is {settings.llm.backend!r}"
        )
    resolved = resolve_model(settings)
    split = _split(settings, cfg)
    artifact_id, root = artifacts.create(
        settings, CHAT_KIND,
        {"status": "training", "base_model": settings.llm.model, "params": cfg.model_dump(), "data": split.counts},
    )
    staging = root / "model.tmp"
    try:
        retrieve = chat_data.live_retrieve(settings, settings.retrieval.top_k + 8)
        examples = chat_data.build_examples(settings, split, retrieve, chat_data.live_sources(settings),
                                            progress=progress)
        device = pick_device(settings.llm.device)
        tokenizer, model = load_model(settings, resolved, device=device, dtype=pick_dtype(settings.llm.dtype, device))
        if not device.startswith("cuda"):
            _limit_cpu_threads()
        end_id = chat_data.end_of_turn_id(tokenizer, model.generation_config)
        rows, counts = [], {"answer": 0, "decline": 0, "too_long": 0}
        for example in examples:
            fitted = chat_data.encode_fitting(settings, tokenizer, resolved.prompt_format, example, end_id)
            if fitted is None:
                counts["too_long"] += 1
                continue
            counts[example.kind] += 1
            rows.append(fitted[1])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
        peft_model, stats = chat_trainer.train(
            model, rows, chat, out_dir=staging, pad_id=pad_id, device=device, seed=cfg.seed, progress=progress
        )
        del peft_model, model
        os.rename(staging, root / artifacts.MODEL_DIR)
        artifacts.update(settings, artifact_id, data={**split.counts, "chat_examples": counts})
        evaluation = compare_chat(settings, artifact_id, split, progress=progress, make_engine=make_engine)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        artifacts.remove_model(settings, artifact_id)
        error = str(getattr(exc, "detail", exc)) or type(exc).__name__
        artifacts.update(settings, artifact_id, status="failed", error=error)
        raise
    log.info("tuned chat model %s: %s", artifact_id, chat_gate.describe(evaluation["verdict"]))
    return artifacts.update(settings, artifact_id, status="ready", train=stats, evaluation=evaluation)


def _activate_chat(
    settings: Settings, artifact_id: str, record: dict, *, progress: Progress | None = None, make_engine=None
) -> dict:
    """Make a chat adapter live if the gate lets it: the engines notice the state file before their next answer."""
    live = artifacts.active(artifacts.read_state(settings, CHAT_KIND))
    if live == artifact_id:
        raise Conflict(f"{artifact_id} is already live")
    if record.get("base_model") != settings.llm.model:
        raise Conflict(
            f"{artifact_id} is a tuning of {record.get('base_model')!r}, not of the configured {settings.llm.model!r}"
        )
    cfg = AdaptSettings.model_validate({**settings.adapt.model_dump(), **_split_params(record)})
    split = _split(settings, cfg)
    evaluation = record.get("evaluation") or {}
    if evaluation.get("live_artifact") != live or evaluation.get("fingerprint") != split.fingerprint:
        evaluation = compare_chat(settings, artifact_id, split, progress=progress, make_engine=make_engine)
        artifacts.update(settings, artifact_id, evaluation=evaluation)
    tolerance = settings.adapt.gate_tolerance
    evaluation["verdict"] = chat_gate.verdict(evaluation["live"], evaluation["candidate"], tolerance)
    if not evaluation["verdict"]["passed"]:
        raise GateRefused(f"{artifact_id} was not activated: {chat_gate.describe(evaluation['verdict'])}", evaluation)

    def switch(state: dict) -> dict:
        if artifacts.active(state) != live:
            raise Conflict("another chat adapter went live meanwhile; activate again to compare with it")
        return {**state, "history": [*(state.get("history") or [None]), artifact_id]}

    artifacts.change_state(settings, CHAT_KIND, switch)
    artifacts.update(settings, artifact_id, activated_at=artifacts.now_iso())
    log.info("chat adapter %s is live (was: %s)", artifact_id, live or "the configured model")
    return {"artifact": artifact_id, "kind": CHAT_KIND, "previous": live, "evaluation": evaluation}


def _rollback_chat(settings: Settings) -> dict:
    """Return to the chat adapter live before the current one (the configured model as shipped at the start)."""
    undone: list = []

    def back(state: dict) -> dict:
        history = state.get("history") or []
        if len(history) < 2:
            raise Conflict("nothing to roll back to: the configured chat model is live")
        undone.append(history[-1])
        return {**state, "history": history[:-1]}

    state = artifacts.change_state(settings, CHAT_KIND, back)
    return {"artifact": artifacts.active(state), "kind": CHAT_KIND, "rolled_back_from": undone[0]}
