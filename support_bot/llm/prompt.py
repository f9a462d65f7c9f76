"""Chat messages and the prompt formats models were trained on (Llama-2-chat's [INST] turns, or a model's template)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# How an answer cites its numbered sources ("... [1]"); the prompt asks for it, grounding and the output guard read it.
CITATION_RE = re.compile(r"\s*\[(\d{1,2})\]")

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
# Llama-2's sentencepiece BOS/EOS as they appear in the text form of a prompt.
BOS_TEXT, EOS_TEXT = "<s>", "</s>"


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation as the model sees it."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError("content must be a string")


def validate_messages(messages: Sequence[ChatMessage]) -> None:
    """Refuse anything but: optional system first, then user/assistant alternating, ending with user."""
    if not messages:
        raise ValueError("a prompt needs at least one user message")
    turns = messages[1:] if messages[0].role == "system" else messages
    if not turns:
        raise ValueError("a prompt needs at least one user message after the system message")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            raise ValueError(
                f"messages must alternate user/assistant after an optional system message; "
                f"turn {i + 1} is {message.role!r}, expected {expected!r}"
            )
    if turns[-1].role != "user":
        raise ValueError("the last message must be from the user")


def _llama2_segments(messages: Sequence[ChatMessage]) -> list[tuple[str, bool]]:
    """(text, closed) per [INST] turn; closed turns carry the assistant's answer and get an EOS."""
    validate_messages(messages)
    system = messages[0].content.strip() if messages[0].role == "system" else None
    turns = list(messages[1:] if system is not None else messages)
    segments: list[tuple[str, bool]] = []
    for i in range(0, len(turns), 2):
        user = turns[i].content.strip()
        if i == 0 and system is not None:
            # Llama-2-chat has no system role: the system prompt is folded into the first user turn.
            user = f"{B_SYS}{system}{E_SYS}{user}"
        if i + 1 < len(turns):
            segments.append((f"{B_INST} {user} {E_INST} {turns[i + 1].content.strip()} ", True))
        else:
            segments.append((f"{B_INST} {user} {E_INST}", False))
    return segments


def format_llama2(messages: Sequence[ChatMessage]) -> str:
    """The Llama-2-chat prompt as text, with <s>/</s> written out (for display and golden tests)."""
    return "".join(
        f"{BOS_TEXT}{text}{EOS_TEXT}" if closed else f"{BOS_TEXT}{text}" for text, closed in _llama2_segments(messages)
    )


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with special-token strings in it (e.g. "<s>") encoded as ordinary text."""
    ids = list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    control = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    if control.intersection(ids):
        # Only reachable with a tokenizer that ignores split_special_tokens; never let text become control tokens.
        raise ValueError(f"{type(tokenizer).__name__} cannot encode special-token text as plain text")
    return ids


def count_tokens(tokenizer: Any, text: str) -> int:
    """How many tokens `text` takes as message content."""
    return len(encode_plain(tokenizer, text))


def llama2_token_ids(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    """The Llama-2-chat prompt as token ids, with the tokenizer's real BOS/EOS ids around each turn."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("the Llama-2 prompt format needs a tokenizer with BOS and EOS tokens")
    ids: list[int] = []
    for text, closed in _llama2_segments(messages):
        ids.append(bos)
        ids.extend(encode_plain(tokenizer, text))
        if closed:
            ids.append(eos)
    return ids


def _control_strings(tokenizer: Any) -> set[str]:
    strings = set(tokenizer.all_special_tokens)
    strings.update(tokenizer.get_added_vocab())
    return {s for s in strings if s}


def template_token_ids(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    """The prompt from the tokenizer's own chat template, ending with the assistant's generation prompt."""
    validate_messages(messages)
    contents = [m.content.strip() for m in messages]
    control = _control_strings(tokenizer)
    if not any(s in content for content in contents for s in control):
        rendered = _render(tokenizer, messages, contents)
        return list(tokenizer.encode(rendered, add_special_tokens=False))
    # Someone typed control-token text (e.g. "<|im_start|>system"): render the template around placeholders and
    # encode each message's content as plain text, so it can never open a new turn or role.
    sentinels = [f"\u2063sb-content-{i}\u2063" for i in range(len(messages))]
    rendered = _render(tokenizer, messages, sentinels)
    ids: list[int] = []
    pos = 0
    for sentinel, content in zip(sentinels, contents, strict=True):
        at = rendered.find(sentinel, pos)
        if at < 0 or rendered.count(sentinel) != 1:
            # The template rewrites or repeats content: fall back to removing the control strings outright.
            return _template_ids_without_control(tokenizer, messages, contents, control)
        ids.extend(tokenizer.encode(rendered[pos:at], add_special_tokens=False))
        ids.extend(encode_plain(tokenizer, content))
        pos = at + len(sentinel)
    ids.extend(tokenizer.encode(rendered[pos:], add_special_tokens=False))
    return ids


def _template_ids_without_control(
    tokenizer: Any, messages: Sequence[ChatMessage], contents: list[str], control: set[str]
) -> list[int]:
    cleaned = []
    for content in contents:
        for s in sorted(control, key=len, reverse=True):
            content = content.replace(s, "")
        cleaned.append(content)
    return list(tokenizer.encode(_render(tokenizer, messages, cleaned), add_special_tokens=False))


def _render(tokenizer: Any, messages: Sequence[ChatMessage], contents: Sequence[str]) -> str:
    conversation = [{"role": m.role, "content": c} for m, c in zip(messages, contents, strict=True)]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def render_prompt_ids(tokenizer: Any, messages: Sequence[ChatMessage], prompt_format: str) -> list[int]:
    """Token ids of the whole prompt in the model's format ("llama2" or "template"), ready for generation."""
    match prompt_format:
        case "llama2":
            return llama2_token_ids(tokenizer, messages)
        case "template":
            return template_token_ids(tokenizer, messages)
        case _:
            raise ValueError(f"unknown prompt format {prompt_format!r}; expected 'llama2' or 'template'")
