"""One Settings object for the whole product (env prefix SUPPORT_BOT_, nested with __)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from support_bot.core.chat_tuning import ChatTuningSettings
# Defined apart for this module's size; importable from here as before.
from support_bot.core.retrieval_settings import CalibrationSettings, RetrievalSettings  # noqa: F401

# The published default admin token: production refuses to start with it, and in development it is accepted only
# from this machine (`support-bot serve` replaces it with a random token of its own).
DEV_SECRET = "dev-insecure-secret-change-me"


class LLMSettings(BaseModel):
    backend: Literal["transformers", "openai", "fake"] = "transformers"
    # A preset name (see `support-bot models list`), a local HF directory or a local .gguf file.
    model: str = "smollm2-135m-instruct"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto -> bf16 on GPU, fp32 on CPU
    max_new_tokens: int = 256
    # Stop generating once the model repeats a sentence it already finished or starts re-listing its numbered
    # sources: a small model loops until max_new_tokens after answering (on the demo FAQ with SmolLM2 on 2 cores,
    # median answer time 4.8 s with this against 16.4 s without; see bench/answers.py).
    stop_on_loop: bool = True
    temperature: float = 0.0
    timeout_s: float = 120.0
    # The model must send the first piece of an answer within this (a hung or overloaded server); past it, or past
    # timeout_s for the whole answer, the customer gets an apology and a person instead of a wait.
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    # Decode attention of the local transformers engine: "flex" reads each request's own KV blocks with FlexAttention
    # (per-row lengths, no mask over the batch's span); "dense" gathers the batch's span under an explicit mask;
    # "auto": flex where decode steps run as CUDA graphs on one GPU, dense elsewhere (and where flex fails to compile).
    decode_attention: Literal["auto", "flex", "dense"] = "auto"
    # Linear layers of the local transformers engine on a CPU, for decode steps of a few rows: "weight_first" computes
    # (W @ x^T)^T, which some BLAS libraries run much faster than F.linear's x @ W^T for a few rows; "linear" keeps
    # F.linear; "auto" times both on the model when the engine starts and takes the faster per row count.
    cpu_linear: Literal["auto", "linear", "weight_first"] = "auto"
    # Prompt lookup of the local transformers engine: a lone greedy stream whose last tokens occur earlier in its
    # prompt or answer checks up to this many of the tokens that followed them in one forward pass (the answer is
    # unchanged, only faster when it quotes its sources); 0 turns it off.
    prompt_lookup_tokens: int = Field(default=3, ge=0, le=16)
    # Where `models pull` stores weights; default <data_dir>/models.
    cache_dir: Path | None = None
    # Extra pip arguments for `models pull` (e.g. a local --find-links directory for offline installs).
    pip_args: list[str] = Field(default_factory=list)
    openai_base_url: str = "http://127.0.0.1:8001/v1"
    openai_api_key: str = ""
    openai_model: str = ""


class EmbeddingSettings(BaseModel):
    # "all-minilm-l6-v2" is the packaged default; otherwise any local sentence-transformers directory.
    model: str = "all-minilm-l6-v2"
    device: str = "cpu"
    batch_size: int = 64
    # How one live query is embedded on CPU. "auto": through a traced and frozen copy of the model (about twice as
    # fast as the general path for one short text), falling back to calling the model directly, then to the general
    # path, whichever first gives the general path's vectors on probe texts. "plain": always the general path.
    query_path: Literal["auto", "plain"] = "auto"


class IndexSettings(BaseModel):
    """How the dense (vector) index is built and searched."""

    # Exact search up to this many vectors. Above it the exact version is published first and answers while an
    # approximate index is built in the background, then published as the next version. Exact search reads every
    # vector per query (about 7 ms per 50k on a 2-core machine), so past this size it dominates retrieval latency.
    approximate_above: int = Field(default=50_000, ge=0)
    # IVF by default: on 1M MiniLM-like vectors (2 cores) IVF built in 155 s and reached recall@10 0.996 against
    # exact search at 1.1 ms a query; HNSW (M=16) took 21 min to build and reached only 0.94 even at efSearch 256.
    approximate_kind: Literal["ivf", "hnsw"] = "ivf"
    # Build the approximate index in a detached process (the publisher returns at once); False builds it in the
    # publishing call itself.
    approximate_in_background: bool = True
    # IVF: number of clusters (0: 4 * sqrt(vectors)) and clusters scanned per query; nprobe 8 gave recall 0.985
    # at 1M, 16 gave 0.996, 32 gave 1.0 at twice the cost. Saved with the index; a reader given these settings
    # applies the current nprobe / efSearch instead, without a rebuild.
    ivf_nlist: int = Field(default=0, ge=0)
    ivf_nprobe: int = Field(default=16, ge=1)
    # HNSW: graph degree and build/search beam widths (recall@10 0.998 at 100k vectors with these).
    hnsw_m: int = Field(default=16, ge=4)
    hnsw_ef_construction: int = Field(default=64, ge=8)
    hnsw_ef_search: int = Field(default=64, ge=1)


class IngestSettings(BaseModel):
    max_upload_bytes: int = 20 * 1024 * 1024
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    # A job running longer fails with that reason (checked between batches; Celery's soft time limit as well).
    job_time_limit_s: int = Field(default=3600, ge=1)
    # Chunks embedded and committed per step: the unit of progress, of resuming after a crash, and of the
    # embeddings held in memory at once. Large steps matter for speed: the encoder sorts a call's texts by
    # length, so short question views batch together instead of being padded to the length of answers.
    batch_chunks: int = Field(default=256, ge=1)
    # Transient errors (database or broker unreachable) are retried this often, after retry_backoff_s * 2^n
    # seconds (capped at retry_backoff_max_s).
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_s: int = Field(default=2, ge=0)
    retry_backoff_max_s: int = Field(default=300, ge=0)
    # Celery queue the ingest task goes to (workers: `celery -A ingest.celery_app worker -Q <queue>`).
    queue: str = "ingest"
    # Redis hands a task that a dead worker took to another worker after this long; it must outlast the longest
    # job, or a slow job runs twice at once (harmless, but wasted). Unset: job_time_limit_s + 600.
    visibility_timeout_s: int | None = Field(default=None, ge=1)
    # Prefix for every key the ingest queue uses in Redis, so installations sharing one Redis stay apart.
    broker_key_prefix: str = ""
    # A running job stamps a heartbeat this often. One whose heartbeat is older than heartbeat_timeout_s lost its
    # worker without recording it (killed at the hard time limit, out of memory, machine gone); every worker sweeps
    # for such jobs every sweep_interval_s and re-queues them, or fails them once past their time limit or retries.
    # The sweep also hands over queued jobs that never reached a worker (the broker was down at upload) once they are
    # heartbeat_timeout_s old.
    heartbeat_interval_s: float = Field(default=15, gt=0)
    heartbeat_timeout_s: float = Field(default=120, gt=0)
    sweep_interval_s: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _heartbeat_outlasts_its_interval(self) -> "IngestSettings":
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError("ingest.heartbeat_timeout_s must be at least twice ingest.heartbeat_interval_s")
        return self


class ChatSettings(BaseModel):
    company_name: str = "Acme"
    bot_name: str = "Support Bot"
    tone: str = "friendly, concise and professional"
    # Extra instructions from the company, added to the built system prompt (the console's settings page edits it).
    system_prompt: str = Field(default="", max_length=2000)
    max_message_chars: int = 4000
    history_turns: int = 10
    # Refresh the conversation's rolling summary once this many messages are newer than it (0 = never).
    summary_every_messages: int = 6
    summary_max_tokens: int = 120
    # Summaries of an identified customer's earlier conversations given to the model.
    customer_memory_conversations: int = 3
    # Greetings, thanks and goodbyes get a polite fixed reply instead of a search of the help center, and "yes" /
    # "no thanks" right after the bot offered a person take or decline that offer.
    small_talk: bool = True


class SafetySettings(BaseModel):
    enabled: bool = True
    # Longer customer messages are refused before any other check (they are also the slowest to screen).
    max_input_chars: int = 4000
    # Similarity to the packaged attack library needs the embedding model; off = pattern signals only.
    use_embeddings: bool = True
    # Combined score at or above which a category's policy action applies; between caution and this: answer with care.
    caution_threshold: float = 0.5
    action_threshold: float = 0.7
    # What each category leads to when its score reaches action_threshold: allow | caution | block | handoff.
    policy: dict[str, Literal["allow", "caution", "block", "handoff"]] = Field(
        default_factory=lambda: {
            "jailbreak": "block",
            "prompt_injection": "block",
            "system_prompt_extraction": "block",
            "obfuscation": "block",
            "off_topic": "caution",
            "abuse": "caution",
            "threat": "handoff",
            "self_harm": "handoff",
            "legal_threat": "handoff",
            "oversize": "block",
            "disallowed_topic": "block",
        }
    )
    # Topics the bot must not discuss. Each entry matches as a whole phrase and, with embeddings on, by meaning
    # (cosine >= disallowed_topic_similarity); for the latter write entries as example questions ("which
    # cryptocurrency should I invest in"), since single words sit far from whole questions in embedding space.
    disallowed_topics: list[str] = Field(default_factory=list)
    disallowed_topic_similarity: float = 0.62
    # Replacement customer-facing replies per category ({company} and {max_chars} are filled in).
    replies: dict[str, str] = Field(default_factory=dict)
    # Customer previous turns read together with the new one, to catch attacks split over several messages.
    history_turns: int = 3
    # PII redaction in what is stored and sent to the model.
    redact_pii: bool = True
    pii_kinds: list[str] = Field(default_factory=lambda: ["email", "phone", "card", "iban", "gov_id"])
    # Output guard: a verbatim run of this many words from the system prompt in an answer counts as a leak.
    leak_min_words: int = 5
    fallback_text: str = (
        "I'm sorry, I can't give a reliable answer to that here. Would you like me to connect you with a person?"
    )
    # A local Llama Guard checkpoint (directory); when set it classifies input and output as an extra signal.
    llama_guard_model: str | None = None
    llama_guard_device: str = "cpu"
    # "llamaguard-7b" (the prompt written by the adapter) or "chat_template" (successors' own template).
    llama_guard_format: Literal["llamaguard-7b", "chat_template"] = "llamaguard-7b"


class ConsoleSettings(BaseModel):
    # A login lasts at most this long, and ends sooner after idle_timeout_s without a request.
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    idle_timeout_s: int = Field(default=3600, ge=60)
    # After lockout_attempts wrong passwords in a row an account refuses logins for lockout_minutes.
    lockout_attempts: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    min_password_length: int = Field(default=10, ge=8)
    # Settings changed in the console by another web process are picked up within this many seconds.
    settings_refresh_s: float = Field(default=5.0, ge=0)



class HandoffSettings(BaseModel):
    """When the bot hands a chat to a person, and how the queue is ordered and explained to the customer."""

    # The customer asks for a person: the built-in phrasings (in request_languages) plus request_phrases, each matched
    # as a whole phrase anywhere in the message.
    request_enabled: bool = True
    request_languages: list[str] = Field(default_factory=lambda: ["en", "de", "fr", "es", "it", "nl", "pt"])
    request_phrases: list[str] = Field(
        default_factory=lambda: [
            "live agent", "live person", "human agent", "real person", "real human", "human being",
            "customer service representative", "support representative", "escalate this",
        ]
    )
    # The widget's "talk to a person" button (POST /api/conversations/{id}/handoff).
    button_enabled: bool = True
    # The bot could not answer this many times in a row.
    abstain_enabled: bool = True
    abstain_streak: int = Field(default=2, ge=1)
    # Negative sentiment or frustration: a message scoring at or below -sentiment_threshold (scores run -1..1), or
    # sentiment_window messages in a row each at or below -sentiment_threshold / 2.
    sentiment_enabled: bool = True
    sentiment_threshold: float = Field(default=0.6, gt=0, le=1)
    sentiment_window: int = Field(default=2, ge=1)
    # A safety policy whose action is "handoff" (settings.safety.policy) queues the chat; off = only its reply.
    safety_enabled: bool = True
    # The bot already answered this many times since it last took the chat, and the customer is still asking.
    max_turns_enabled: bool = True
    max_bot_turns: int = Field(default=10, ge=1)
    # The model failed or timed out while answering: apologise and queue the chat (off = apologise and offer only).
    model_failure_enabled: bool = True
    # Queue order: higher priority first, then the longest waiting. Keys are reasons ("sentiment") or a reason with
    # its detail ("safety:self_harm", which wins over "safety").
    priority: dict[str, int] = Field(
        default_factory=lambda: {
            "safety:self_harm": 50, "safety:threat": 40, "safety": 30, "sentiment": 20, "request": 10,
            "button": 10, "model": 10, "abstain": 5, "max_turns": 0, "offline": 0,
        }
    )
    # Estimated wait: this many minutes per place in the queue, shared among the agents online.
    minutes_per_position: float = Field(default=3.0, ge=0)
    # An "online" agent who has not been seen for this long counts as offline (the console refreshes presence).
    presence_timeout_s: int = Field(default=300, ge=10)
    # The agent's summary of the problem: written by the model once the customer sent at least this many messages;
    # below that the customer's own words are the summary.
    summary_min_customer_messages: int = Field(default=2, ge=1)
    summary_max_tokens: int = Field(default=80, ge=8)
    # What the customer is told ({position}, {wait} and {company} are filled in), one of them at a time: the place in
    # the queue while someone is online, else the offer to leave a message, and once one was left, the thanks.
    connecting_text: str = (
        "I'm connecting you with a person from our team. You are number {position} in the queue; the expected wait "
        "is {wait}. You can keep writing here in the meantime."
    )
    offline_text: str = (
        "I'd like to connect you with a person, but no one from our team is online right now. Leave a message and "
        "your e-mail address, and we will get back to you by e-mail."
    )
    offline_received_text: str = "Thanks! We received your message and will answer by e-mail."


class EventsSettings(BaseModel):
    # A comment line on every live stream this often, so proxies keep it open and dead clients are noticed.
    heartbeat_s: float = Field(default=15.0, gt=0)
    # While the bus (Redis) is unreachable, streams read new events from the database this often instead.
    poll_interval_s: float = Field(default=1.0, gt=0)
    # A stream ends after this long and the client reconnects with Last-Event-ID: spreads clients over replicas
    # after a deploy and bounds how long a server shutdown waits for open streams.
    max_stream_s: float = Field(default=300.0, gt=0)
    # Reconnection delay suggested to EventSource clients (the SSE `retry:` field).
    retry_ms: int = Field(default=2000, ge=0)
    # Redis pub/sub channels are shared by every database of a server: the prefix keeps installations apart.
    channel_prefix: str = "support_bot:"
    # Reconnecting to Redis backs off exponentially up to this.
    reconnect_max_s: float = Field(default=5.0, gt=0)


_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_ORIGIN = re.compile(r"https?://[^/\s?#]+")


class WidgetSettings(BaseModel):
    """The embeddable chat widget (widget.js): which sites may embed it, its looks, and its abuse limits."""

    # Sites allowed to call the public chat API from their pages (CORS), as origins: "https://www.example.com"
    # (scheme, host and port; no path). "*" allows any site. Empty: only pages served by this server itself.
    allowed_origins: list[str] = Field(default_factory=list)
    # Shown in the panel's header; unset: "<chat.company_name> support".
    title: str | None = Field(default=None, max_length=80)
    greeting: str = Field(
        default="Hi! I'm the virtual assistant. Ask me anything, or ask for a person at any time.", max_length=500
    )
    launcher_label: str = Field(default="Chat with us", max_length=40)
    position: Literal["left", "right"] = "right"
    # The launcher, the header and the customer's bubbles; text_color is written on top of primary_color.
    primary_color: str = "#2457d6"
    text_color: str = "#ffffff"
    # An http(s) image shown in the header (square, at least 64 px).
    avatar_url: str | None = None
    # Browsers keep widget.js this long before asking again (answered with 304 while unchanged).
    script_max_age_s: int = Field(default=600, ge=0)
    # Abuse limits on the public chat API, per client IP and per conversation (Redis-backed when redis_url is set,
    # so every web process counts together). Behind a reverse proxy the client IP is the proxy's unless uvicorn
    # trusts its X-Forwarded-For (FORWARDED_ALLOW_IPS).
    rate_limit_enabled: bool = True
    rate_limit_key_prefix: str = "support_bot:ratelimit:"
    # Each limit: at most N requests in any window of the matching *_window_s seconds (a sliding window).
    conversations_per_ip: int = Field(default=20, ge=1)
    conversations_per_ip_window_s: float = Field(default=3600, gt=0)
    messages_per_ip: int = Field(default=30, ge=1)
    messages_per_ip_window_s: float = Field(default=60, gt=0)
    messages_per_conversation: int = Field(default=10, ge=1)
    messages_per_conversation_window_s: float = Field(default=60, gt=0)
    # Every other call (history, status, feedback, typing, event streams).
    requests_per_ip: int = Field(default=300, ge=1)
    requests_per_ip_window_s: float = Field(default=60, gt=0)

    @field_validator("primary_color", "text_color")
    @classmethod
    def _hex_color(cls, value: str) -> str:
        # The colours end up in CSS on customers' pages: only a plain hex colour can never carry anything else.
        if not _HEX_COLOR.fullmatch(value):
            raise ValueError("must be a hex colour such as #2457d6")
        return value

    @field_validator("avatar_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://\S+", value):
            raise ValueError("must be an http(s) URL")
        return value or None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        cleaned = []
        for value in values:
            value = value.strip().rstrip("/")
            if value != "*" and not _ORIGIN.fullmatch(value):
                raise ValueError(f"{value!r} is not an origin like https://www.example.com (or *)")
            cleaned.append(value.lower())
        return cleaned


class AnalyticsSettings(BaseModel):
    # Content gaps: questions whose embeddings are at least this cosine-similar to a group's centre join that group.
    gap_similarity: float = Field(default=0.6, gt=0, le=1.0)
    # The newest this many questions are grouped; older ones are left out (the page says so).
    gap_max_questions: int = Field(default=1000, ge=1, le=5000)
    gap_examples: int = Field(default=5, ge=1, le=50)
    # The range the analytics pages show when none is chosen: the last this many days, today included.
    default_days: int = Field(default=30, ge=1, le=366)


class LogSettings(BaseModel):
    """How `support-bot serve` and `support-bot worker` write their logs (to stderr)."""

    # "json": one JSON object a line (ts, level, logger, message, request_id or job_id, extras such as method,
    # path, status and duration_ms on access lines, exception) for log collectors; "text": lines for people.
    # Unset: json in production, text in development.
    format: Literal["json", "text"] | None = None
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # One line per HTTP request (method, path, route, status, duration_ms, client) when it ends; it replaces
    # uvicorn's own access log. Every line written while serving a request carries its X-Request-ID.
    access_log: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class MetricsSettings(BaseModel):
    """GET /metrics (Prometheus text format). It reveals traffic and queue sizes, so it is not public.

    A scrape is let in when its client address is in allow_from, or when it carries `Authorization: Bearer <token>`
    with the admin token or metrics.token; otherwise it gets 401. allow_from unset means loopback only in
    development and no address at all in production (token only): behind a reverse proxy on the same host every
    request comes from loopback unless uvicorn trusts the proxy's X-Forwarded-For (FORWARDED_ALLOW_IPS).
    """

    enabled: bool = True
    # Networks (CIDR, e.g. "10.0.0.0/8", or single addresses) whose clients may scrape without a token.
    allow_from: list[str] | None = None
    # A scrape-only token, so Prometheus need not hold the admin token (which also uploads knowledge).
    token: str | None = Field(default=None, min_length=16)

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        cleaned = []
        for value in values:
            try:
                cleaned.append(str(ipaddress.ip_network(value.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{value!r} is not a network like 10.0.0.0/8 or an IP address") from None
        return cleaned

    def networks(self, env: str) -> list[str]:
        """The networks that may scrape without a token under `env`."""
        if self.allow_from is not None:
            return self.allow_from
        return ["127.0.0.0/8", "::1/128"] if env == "development" else []


class LearningSettings(BaseModel):
    """The learning loop: conversations a person resolved become suggested FAQ entries for ops to review."""

    enabled: bool = True
    # Approved suggestions are ingested together as this knowledge source (each approval makes a new version).
    source_name: str = Field(default="learned-faq", min_length=1, max_length=255)
    # A new suggestion whose question is at least this cosine-similar to a pending one's is merged into it.
    duplicate_similarity: float = Field(default=0.8, gt=0, le=1.0)
    # Shorter problems or answers (after PII redaction) are not worth an FAQ entry.
    min_question_chars: int = Field(default=10, ge=1)
    min_answer_chars: int = Field(default=20, ge=1)


class AdaptSettings(BaseModel):
    """Tuning the embedder on the company's own data (`support-bot tune embedder`, the console's Adaptation page)."""

    # Contrastive fine-tuning: each question against its answer (and against other questions with the same answer),
    # every other answer in the batch as a negative, plus the closest wrong entry of the current index. The
    # defaults were chosen by cross-validation on held-out entries of the FAQs themselves (README, "Adapting").
    epochs: int = Field(default=2, ge=1, le=50)
    learning_rate: float = Field(default=5e-5, gt=0, le=1e-2)
    batch_size: int = Field(default=32, ge=2, le=1024)
    # Texts are cut to this many tokens while training (answers are long; their start carries the topic, and the
    # step cost grows with the longest text in the batch).
    max_tokens: int = Field(default=64, ge=16, le=512)
    # Only the top this many transformer layers learn (0: the whole model). The frozen layers' output is computed
    # once per text, so each step costs about train_layers / layers of a whole-model step.
    train_layers: int = Field(default=2, ge=0, le=64)
    hard_negatives: bool = True
    question_pairs: bool = True
    # Cosine logit scale (1 / temperature) of the contrastive loss.
    scale: float = Field(default=20.0, gt=0)
    # Each epoch trains on at most this many pairs, a fresh random sample each time (0: all of them), so the time to
    # tune stays bounded on large data sets (15,000 past chats give 30,000 pairs an epoch).
    max_pairs_per_epoch: int = Field(default=8000, ge=0)
    # Stop after this many steps (0: no limit), whatever the epochs say.
    max_steps: int = Field(default=0, ge=0)
    # Resolved chats and helpful answers read, newest first.
    max_chats: int = Field(default=5000, ge=0)
    # The held-out slice: a share of the questions (their answers stay indexed) and a share of the distinct answers
    # (left out entirely: their questions should be declined), each capped; chosen by a seeded hash, never trained on.
    heldout_fraction: float = Field(default=0.15, ge=0, le=0.5)
    heldout_max: int = Field(default=500, ge=1)
    abstain_fraction: float = Field(default=0.1, ge=0, le=0.5)
    abstain_max: int = Field(default=200, ge=0)
    seed: int = 0
    # An artifact worse than the live one by more than this in a gated held-out figure is refused (adapt.gate).
    gate_tolerance: float = Field(default=0.0, ge=0, le=1)
    chat: ChatTuningSettings = Field(default_factory=ChatTuningSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUPPORT_BOT_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    # The interactive API docs and the OpenAPI schema (/docs, /redoc, /openapi.json). Unset: served in development,
    # not in production, where they would map every route for anyone.
    api_docs: bool | None = None
    data_dir: Path = Path("data")
    # Default: SQLite file under the data dir.
    database_url: str | None = None
    # Set to use Celery workers for ingest and Redis pub/sub for live events.
    redis_url: str | None = None
    # Bearer token for scripts (the knowledge API, metrics scrapes). Required in production; in development, left at
    # the default, `support-bot serve` makes a random one of its own under the data dir and prints it once, and no
    # server takes the default from another machine.
    admin_token: str = DEV_SECRET
    # Host sites sign identified customers' ids with this (HMAC-SHA256); unset = identified customers refused.
    customer_hmac_secret: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Run `alembic upgrade head` when the web app starts.
    migrate_on_start: bool = True
    # Largest request body a route reads (JSON, forms), counted as it arrives, so an anonymous caller cannot make the
    # server buffer gigabytes before refusing them; knowledge uploads may add ingest.max_upload_bytes per file.
    max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)

    llm: LLMSettings = Field(default_factory=LLMSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    adapt: AdaptSettings = Field(default_factory=AdaptSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    widget: WidgetSettings = Field(default_factory=WidgetSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        problem = self.secret_problem()
        if problem:
            raise ValueError(problem)
        return self

    def secret_problem(self) -> str | None:
        """In production: which secret is still the development default or too short; None when all are fine.

        Also called by the app factory, since copies made with model_copy(update=...) skip validation.
        """
        if self.env != "production":
            return None
        secrets = {"admin_token": self.admin_token}
        if self.customer_hmac_secret is not None:
            secrets["customer_hmac_secret"] = self.customer_hmac_secret
        for name, value in secrets.items():
            if value == DEV_SECRET or len(value) < 16:
                return f"SUPPORT_BOT_{name.upper()} must be set to a strong secret (16+ characters) in production"
        return None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'support_bot.db').resolve()}"

    @property
    def model_cache_dir(self) -> Path:
        return (self.llm.cache_dir or self.data_dir / "models").resolve()

    @property
    def index_dir(self) -> Path:
        return (self.data_dir / "index").resolve()

    @property
    def uploads_dir(self) -> Path:
        return (self.data_dir / "uploads").resolve()

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.index_dir, self.uploads_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
