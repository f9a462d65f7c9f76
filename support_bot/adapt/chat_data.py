"""Chat-model training examples in the deployment's exact prompt, from the same examples the embedder learns from.

Each training question (data.py: FAQ entries, resolved chats, approved suggestions, helpful answers) becomes a turn
as live chat builds it: the system prompt of chat.prompt with a canary as verify.py adds one, the sources numbered as
the prompt builder numbers them (the question's right entry and the live index's best-ranked entries that answer
something else, in a seeded random order, so the model learns to find the right one rather than to cite [1]), and
the question. The target is what a good answer looks like: the right entry's answer in a few whole sentences, in the
company's own words, citing its source number. A share of the questions is asked again with the right entry (and
every entry with the same answer) left out of the sources; there the target is the product's decline.

Nothing of the held-out slice is ever used: held-out questions are not asked, and neither held-out entries nor
entries of withheld answers are shown as sources.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support_bot.adapt.data import Example, Split, group_of
from support_bot.chat.grounding import split_sentences
from support_bot.chat.prompt import system_prompt
from support_bot.chat.replies import ABSTAIN_TEXT
from support_bot.core.config import Settings
from support_bot.llm.prompt import BOS_TEXT, ChatMessage, encode_plain, format_llama2, render_prompt_ids
from support_bot.safety.output_guard import CANARY_PREFIX, system_prompt_with_canary

ANSWER, DECLINE = "answer", "decline"
# Labels of tokens the loss ignores (the prompt): the model learns to write answers, not to predict its prompt.
IGNORE = -100
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_END = re.compile(r"([.!?])([\"')\]]*)$")


@dataclass(frozen=True)
class Source:
    """An entry as the prompt shows it (the retriever's Hit has the same `text`)."""

    key: str
    group: str
    text: str


@dataclass(frozen=True)
class ChatExample:
    key: str
    kind: str  # ANSWER | DECLINE
    question: str
    sources: tuple[Source, ...]
    # The right source's number in the prompt (1-based); None in a decline example.
    right: int | None
    target: str
    canary: str

    def messages(self, settings: Settings) -> list[ChatMessage]:
        """The turn as live chat builds it for a first question: system prompt with the sources, then the question."""
        prompt = system_prompt_with_canary(system_prompt(settings, list(self.sources)), self.canary)
        return [ChatMessage("system", prompt), ChatMessage("user", self.question)]


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + answer + end of turn, and labels: IGNORE over the prompt, the ids themselves after."""

    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def short_answer(answer: str, words: int) -> str:
    """The answer's first sentences, as many as fit in `words` words (at least one), joined as one paragraph."""
    out: list[str] = []
    count = 0
    for sentence in split_sentences(answer):
        sentence = _BULLET.sub("", sentence).strip()
        n = len(sentence.split())
        if not n:
            continue
        if out and count + n > words:
            break
        out.append(sentence)
        count += n
    return " ".join(out)


def cite(text: str, n: int) -> str:
    """The text with its source marker before its final stop ("... effective [2]."), as the prompt asks."""
    m = _END.search(text)
    if m is None:
        return f"{text} [{n}]"
    return f"{text[: m.start()]} [{n}]{m.group(1)}{m.group(2)}"


def _forbidden(source: Source, split: Split) -> bool:
    """Held out, or answering what the evaluation withholds: never shown to the model in training."""
    return source.key in split.heldout_keys or source.group in split.withheld_groups


def live_sources(settings: Settings) -> dict[str, Source]:
    """The live index's entries as sources, by the key data.knowledge_examples gives them (their first chunk)."""
    from support_bot.knowledge.reader import load_current

    out: dict[str, Source] = {}
    for rec in load_current(settings).records:
        key = f"kb:{rec.source}:{rec.entry_id or rec.chunk_id}"
        if key not in out:
            out[key] = Source(key, group_of(_body(rec)), rec.text)
    return out


def _body(rec: Any) -> str:
    if rec.answer:
        return rec.answer
    title = rec.title or ""
    return rec.text[len(title) + 1 :] if title and rec.text.startswith(title + "\n") else rec.text


def live_retrieve(settings: Settings, depth: int) -> Callable[[str], list[Source]]:
    """The live retriever (hybrid search, as chat searches) as a function: question -> its ranked entries."""
    from support_bot.knowledge.retriever import Retriever

    retriever = Retriever(settings)

    def retrieve(question: str) -> list[Source]:
        hits = retriever.search(question, k=depth).hits
        return [Source(f"kb:{h.source}:{h.entry_id or h.chunk_id}", group_of(_body(h)), h.text) for h in hits]

    return retrieve


def training_questions(split: Split, limit: int, seed: int) -> list[Example]:
    """The training examples a run asks, a seeded sample of `limit` (0: all), in a seeded random order."""
    train = sorted(split.train, key=lambda e: e.key)
    rng = random.Random(f"{seed}:chat-questions")
    picked = rng.sample(train, limit) if limit and limit < len(train) else list(train)
    rng.shuffle(picked)
    return picked


def build_examples(
    settings: Settings,
    split: Split,
    retrieve: Callable[[str], list[Source]],
    known: dict[str, Source],
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ChatExample]:
    """The chat examples of a run: an answer example for each question asked, and decline examples for a share.

    `retrieve` ranks the live entries for a question; `known` holds the live entries by key, so a question from the
    knowledge base is answered from its entry exactly as the index shows it.
    """
    cfg = settings.adapt.chat
    top_k = settings.retrieval.top_k
    rng = random.Random(f"{settings.adapt.seed}:chat-examples")
    questions = training_questions(split, cfg.max_examples, settings.adapt.seed)
    out: list[ChatExample] = []
    for i, e in enumerate(questions):
        if e.key in split.heldout_keys or e.group in split.withheld_groups:
            continue  # split.train holds none; kept as the rule this module stands on
        ranked = [s for s in retrieve(e.question) if s.group != e.group and not _forbidden(s, split)]
        right = known.get(e.key) or Source(e.key, e.group, f"{e.question}\n{e.answer}")
        sources = [right, *ranked[: top_k - 1]]
        rng.shuffle(sources)
        n = sources.index(right) + 1
        canary = f"{CANARY_PREFIX}-{rng.getrandbits(64):016x}"
        target = cite(short_answer(e.answer, cfg.answer_words), n)
        out.append(ChatExample(e.key, ANSWER, e.question, tuple(sources), n, target, canary))
        if rng.random() < cfg.decline_fraction and ranked:
            others = list(ranked[:top_k])
            rng.shuffle(others)
            canary = f"{CANARY_PREFIX}-{rng.getrandbits(64):016x}"
            out.append(ChatExample(e.key, DECLINE, e.question, tuple(others), None, ABSTAIN_TEXT, canary))
        if progress and (i % 20 == 19 or i == len(questions) - 1):
            progress("building chat examples", i + 1, len(questions))
    return out


def end_of_turn_id(tokenizer: Any, model_generation_config: Any = None) -> int:
    """The token the engine stops an answer at: the model's generation EOS (first of several), else the tokenizer's."""
    eos = getattr(model_generation_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    eos = tokenizer.eos_token_id if eos is None else eos
    if eos is None:
        raise ValueError("the chat model has no end-of-turn token to end its answers with")
    return int(eos)


def _answer_ids(tokenizer: Any, prompt_ids: list[int], prompt_text: str, target: str, encode) -> list[int]:
    """The answer's ids as the model writes them after the prompt: the joint text's tokens past the prompt's when
    the prompt's tokens are a prefix of it (tokenizers merge across the seam otherwise), else the answer alone."""
    joint = encode(prompt_text + target)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids) :]
    return encode_plain(tokenizer, target)


def encode(
    tokenizer: Any, prompt_format: str, messages: list[ChatMessage], target: str, end_id: int
) -> Encoded:
    """Prompt ids exactly as the engine renders them (render_prompt_ids), the answer, and the end of turn."""
    prompt_ids = render_prompt_ids(tokenizer, messages, prompt_format)
    if prompt_format == "llama2":
        # "[INST] ... [/INST] answer": sentencepiece writes the space before the answer into its first token.
        text = format_llama2(messages)[len(BOS_TEXT) :]
        answer = _answer_ids(
            tokenizer, prompt_ids, text + " ", target, lambda t: [tokenizer.bos_token_id, *encode_plain(tokenizer, t)]
        )
    else:
        conversation = [{"role": m.role, "content": m.content.strip()} for m in messages]
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        answer = _answer_ids(
            tokenizer, prompt_ids, text, target, lambda t: list(tokenizer.encode(t, add_special_tokens=False))
        )
    ids = [*prompt_ids, *answer, end_id]
    return Encoded(ids, [IGNORE] * len(prompt_ids) + [*answer, end_id])


def encode_fitting(
    settings: Settings, tokenizer: Any, prompt_format: str, example: ChatExample, end_id: int
) -> tuple[ChatExample, Encoded] | None:
    """The example encoded within adapt.chat.max_tokens, dropping distractors from the last one shown (never the
    right entry); None when even the right entry alone does not fit."""
    limit = settings.adapt.chat.max_tokens
    while True:
        encoded = encode(tokenizer, prompt_format, example.messages(settings), example.target, end_id)
        if len(encoded.input_ids) <= limit:
            return example, encoded
        droppable = [i for i, s in enumerate(example.sources) if example.right is None or i != example.right - 1]
        if len(example.sources) <= 1 or not droppable:
            return None
        drop = droppable[-1]
        sources = tuple(s for i, s in enumerate(example.sources) if i != drop)
        right = None if example.right is None else (example.right - (1 if drop < example.right - 1 else 0))
        target = example.target if right is None else example.target.replace(f"[{example.right}]", f"[{right}]")
        example = ChatExample(example.key, example.kind, example.question, sources, right, target, example.canary)
