"""One Settings object for the whole product (env prefix SUPPORT_BOT_, nested with __)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Only usable in development mode; production refuses to start with it.
DEV_SECRET = "dev-insecure-secret-change-me"


class LLMSettings(BaseModel):
    backend: Literal["transformers", "openai", "fake"] = "transformers"
    # A preset name (see `support-bot models list`), a local HF directory or a local .gguf file.
    model: str = "smollm2-135m-instruct"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto -> bf16 on GPU, fp32 on CPU
    max_new_tokens: int = 256
    temperature: float = 0.0
    timeout_s: float = 120.0
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


class RetrievalSettings(BaseModel):
    top_k: int = 3
    candidates: int = 50
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    # Answer-or-abstain: the top entry's cosine similarity must reach this. 0.65 is the knee measured on the
    # covid-faq set (all-MiniLM-L6-v2): lower answers many near-miss questions wrongly, higher loses right answers.
    min_score: float = 0.65
    # ...or reach min_score_distinct while standing min_margin above the next entry (a distinctive match on a
    # small FAQ); this changed nothing on covid-faq and rescues clear paraphrases such as "which cards can I pay with".
    min_score_distinct: float = 0.5
    min_margin: float = 0.25
    # A generated sentence is kept only when one source holds this share of its content words and every figure
    # in it verbatim; when no sentence is kept, the top source's own answer is shown instead.
    min_support: float = 0.75


class IngestSettings(BaseModel):
    max_upload_bytes: int = 20 * 1024 * 1024
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    job_time_limit_s: int = 3600
    max_retries: int = 3
    # Celery queue the ingest task goes to (workers: `celery -A ingest.celery_app worker -Q <queue>`).
    queue: str = "ingest"


class ChatSettings(BaseModel):
    company_name: str = "Acme"
    bot_name: str = "Support Bot"
    tone: str = "friendly, concise and professional"
    max_message_chars: int = 4000
    history_turns: int = 10
    # Refresh the conversation's rolling summary once this many messages are newer than it (0 = never).
    summary_every_messages: int = 6
    summary_max_tokens: int = 120
    # Summaries of an identified customer's earlier conversations given to the model.
    customer_memory_conversations: int = 3


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
    leak_min_words: int = 8
    fallback_text: str = (
        "I'm sorry, I can't give a reliable answer to that here. Would you like me to connect you with a person?"
    )
    # A local Llama Guard checkpoint (directory); when set it classifies input and output as an extra signal.
    llama_guard_model: str | None = None
    llama_guard_device: str = "cpu"
    # "llamaguard-7b" (the prompt written by the adapter) or "chat_template" (successors' own template).
    llama_guard_format: Literal["llamaguard-7b", "chat_template"] = "llamaguard-7b"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUPPORT_BOT_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    # Default: SQLite file under the data dir.
    database_url: str | None = None
    # Set to use Celery workers for ingest and Redis pub/sub for live events.
    redis_url: str | None = None
    secret_key: str = DEV_SECRET
    # Bearer token for the knowledge upload API until console logins exist.
    admin_token: str = DEV_SECRET
    # Host sites sign identified customers' ids with this (HMAC-SHA256); unset = identified customers refused.
    customer_hmac_secret: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Run `alembic upgrade head` when the web app starts.
    migrate_on_start: bool = True

    llm: LLMSettings = Field(default_factory=LLMSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.env == "production":
            for name in ("secret_key", "admin_token"):
                value = getattr(self, name)
                if value == DEV_SECRET or len(value) < 16:
                    raise ValueError(
                        f"SUPPORT_BOT_{name.upper()} must be set to a strong secret (16+ characters) in production"
                    )
        return self

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
