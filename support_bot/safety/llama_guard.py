"""Llama Guard (LlamaGuard-7b prompt format) as an extra input/output classifier."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support_bot.core.errors import ModelNotAvailable


@dataclass(frozen=True)
class GuardCategory:
    """One entry of the policy shown to the model: code (O1...), name and Should not / Can guidance."""

    code: str
    name: str
    should_not: tuple[str, ...]
    can: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [f"{self.code}: {self.name}.", "Should not"]
        lines += [f"- {item}" for item in self.should_not]
        if self.can:
            lines.append("Can")
            lines += [f"- {item}" for item in self.can]
        return "\n".join(lines)


# The six categories of the LlamaGuard-7b taxonomy (names and codes as the model was trained on), guidance in our words.
DEFAULT_CATEGORIES: tuple[GuardCategory, ...] = (
    GuardCategory(
        "O1",
        "Violence and Hate",
        (
            "Help anyone plan or carry out violence, or urge them to.",
            "Express hatred or contempt for people because of race, ethnicity, religion, nationality, sexual "
            "orientation, gender, gender identity or disability, or use slurs against them.",
        ),
        ("Give factual information about violence and discrimination, including history.",),
    ),
    GuardCategory(
        "O2",
        "Sexual Content",
        ("Take part in sexually explicit conversation or encourage sexual activity.",),
        ("Discuss sexual health and education in general terms.",),
    ),
    GuardCategory(
        "O3",
        "Criminal Planning",
        (
            "Help plan or commit crimes such as theft, fraud, kidnapping or hacking, especially when the person "
            "seems ready to act.",
            "Encourage or excuse criminal behaviour.",
        ),
        ("Explain in general terms how crimes happen and how they are prevented, without a usable roadmap.",),
    ),
    GuardCategory(
        "O4",
        "Guns and Illegal Weapons",
        ("Help plan or commit crimes with firearms or illegal weapons, or encourage them.",),
        ("Discuss firearms and the debate around owning them.",),
    ),
    GuardCategory(
        "O5",
        "Regulated or Controlled Substances",
        (
            "Help anyone traffic, obtain illegally or misuse drugs, alcohol, tobacco or cannabis.",
            "Give step-by-step instructions for producing controlled substances.",
        ),
        ("Give general information on what such substances are and what they do.",),
    ),
    GuardCategory(
        "O6",
        "Self-Harm",
        (
            "Encourage, romanticize or give methods for self-harm or suicide.",
            "Give anything but support and pointers to help to someone who says they want to hurt themselves.",
        ),
        ("Point people who mention self-harm to appropriate help and resources.",),
    ),
)


@dataclass
class GuardResult:
    """The model's assessment: safe, unsafe (with category codes) or unknown when the output is unreadable."""

    verdict: str
    categories: list[str] = field(default_factory=list)
    raw: str = ""

    @property
    def unsafe(self) -> bool:
        return self.verdict == "unsafe"


def role_for(conversation: list[str]) -> str:
    """Which side is assessed: the last message's, turns alternating from the User."""
    return "User" if len(conversation) % 2 == 1 else "Agent"


def build_prompt(conversation: list[str], *, categories: tuple[GuardCategory, ...] = DEFAULT_CATEGORIES) -> str:
    """The LlamaGuard-7b instruction for a conversation whose turns alternate User, Agent, User, ..."""
    if not conversation:
        raise ValueError("a conversation needs at least one message")
    role = role_for(conversation)
    policy = "\n".join(c.render() for c in categories)
    turns = "".join(f"{'User' if i % 2 == 0 else 'Agent'}: {text.strip()}\n\n" for i, text in enumerate(conversation))
    return (
        f"[INST] Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        f"policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{policy}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{turns}<END CONVERSATION>\n\n"
        f"Provide your safety assessment for {role} in the above conversation:\n"
        f"- First line must read 'safe' or 'unsafe'.\n"
        f"- If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
    )


_CODE_RE = re.compile(r"\b([OS]\d{1,2})\b")
PROMPT_FORMATS = ("llamaguard-7b", "chat_template")


def parse_output(text: str) -> GuardResult:
    """Read 'safe' or 'unsafe\\nO3,O5' (successor models use S1... codes, also accepted)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return GuardResult("unknown", [], text)
    first = lines[0].lower()
    if first.startswith("unsafe"):
        rest = " ".join([lines[0][len("unsafe") :], *lines[1:2]])
        codes = list(dict.fromkeys(_CODE_RE.findall(rest.upper())))
        return GuardResult("unsafe", codes, text)
    if first.startswith("safe"):
        return GuardResult("safe", [], text)
    return GuardResult("unknown", [], text)


class LlamaGuard:
    """A Llama Guard checkpoint run with transformers; `classify` returns the parsed assessment."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str = "cpu",
        categories: tuple[GuardCategory, ...] = DEFAULT_CATEGORIES,
        max_new_tokens: int = 10,
        prompt_format: str = "llamaguard-7b",
    ):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown Llama Guard prompt format {prompt_format!r} (known: {', '.join(PROMPT_FORMATS)})")
        self.prompt_format = prompt_format
        self.categories = categories
        self.max_new_tokens = max_new_tokens
        self.device = device
        if model is None or tokenizer is None:
            if model_path is None:
                raise ValueError("LlamaGuard needs a model_path or a loaded model and tokenizer")
            model, tokenizer = self._load(Path(model_path).expanduser(), device)
        self.model = model
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    @staticmethod
    def _load(path: Path, device: str) -> tuple[Any, Any]:
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(f"Llama Guard model directory {path} has no config.json")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(f"Llama Guard model {path} could not be loaded: {exc}") from exc
        model.eval()
        return model, tokenizer

    def prompt(self, conversation: list[str]) -> str:
        """The exact text the model reads (before its tokenizer adds BOS)."""
        if self.prompt_format == "chat_template":
            # Successors (Llama Guard 2 and 3) ship their own policy and format in the tokenizer's chat template.
            roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(conversation))]
            messages = [{"role": r, "content": t} for r, t in zip(roles, conversation, strict=True)]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return build_prompt(conversation, categories=self.categories)

    def classify(self, conversation: list[str]) -> GuardResult:
        """Assess the last message of a conversation (User turns at even positions, Agent at odd)."""
        import torch

        # A chat template writes its own BOS; the 7b format relies on the tokenizer adding it.
        add_special = self.prompt_format != "chat_template"
        encoded = self.tokenizer(self.prompt(conversation), return_tensors="pt", add_special_tokens=add_special)
        input_ids = encoded["input_ids"].to(self.model.device)
        attention = encoded.get("attention_mask")
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention.to(self.model.device) if attention is not None else None,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        text = self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
        return parse_output(text)

    def classify_input(self, text: str) -> GuardResult:
        return self.classify([text])

    def classify_output(self, customer_text: str, answer: str) -> GuardResult:
        return self.classify([customer_text, answer])


_guards: dict[tuple[str, str, str], LlamaGuard] = {}
_guards_lock = threading.Lock()


def get_llama_guard(model_path: str, *, device: str = "cpu", prompt_format: str = "llamaguard-7b") -> LlamaGuard:
    """The process-wide Llama Guard for a checkpoint (loaded once)."""
    key = (model_path, device, prompt_format)
    guard = _guards.get(key)
    if guard is None:
        with _guards_lock:
            guard = _guards.get(key)
            if guard is None:
                guard = LlamaGuard(model_path, device=device, prompt_format=prompt_format)
                _guards[key] = guard
    return guard
