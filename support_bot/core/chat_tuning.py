"""Settings of chat-model tuning (`support-bot tune chat`): settings.adapt.chat, kept apart from config.py for size."""

from __future__ import annotations

from pydantic import BaseModel, Field

# Every linear projection of a Llama block: attention and MLP. Adapting all of them learns the answer format in fewer
# steps than attention alone, at a cost that only grows with the rank.
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ChatTuningSettings(BaseModel):
    """LoRA on the configured chat model, from retrieval-augmented examples in its own prompt format.

    The held-out slice (seed, heldout_*, abstain_*) and the gate's tolerance are settings.adapt's, shared with the
    embedder, so both kinds of artifact are judged on questions neither was trained on.
    """

    rank: int = Field(default=8, ge=1, le=256)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_PROJECTIONS), min_length=1)
    # LoRA only on the top this many transformer blocks (0: every block). Gradients then stop at the lowest adapted
    # block, so a step costs the whole forward pass plus the backward pass of these blocks alone: on a CPU, where
    # tuning time is what ops wait for, that is most of the saving there is.
    train_layers: int = Field(default=12, ge=0, le=200)
    # Two passes: on covid-faq's 177 questions the default CPU model then writes 41% of its answers itself (one pass:
    # 18%, the shipped model 8%) with the same right and wrong answers; the whole tune took 6.3 minutes there (one
    # pass: 4.1).
    epochs: int = Field(default=2, ge=1, le=20)
    learning_rate: float = Field(default=5e-4, gt=0, le=1e-1)
    # Examples per optimizer step (run one sequence at a time on a CPU, padded batches of micro_batch on a GPU).
    batch_size: int = Field(default=8, ge=1, le=512)
    micro_batch: int = Field(default=4, ge=1, le=64)
    # Stop after this many optimizer steps (0: no limit), whatever the epochs say.
    max_steps: int = Field(default=0, ge=0)
    # At most this many training questions per run, a seeded sample (0: all): each costs a forward and backward pass
    # over its whole prompt, sources included, so this bounds the time to tune on a large knowledge base.
    max_examples: int = Field(default=160, ge=0)
    # Besides each question answered from sources holding its entry, this share of the questions is asked again with
    # that entry (and every entry with the same answer) left out of the sources, and the product's decline as target.
    decline_fraction: float = Field(default=0.2, ge=0, le=1)
    # The target answer: the right entry's answer in whole sentences, as many as fit in this many words (at least
    # the first), citing its source; an entry answered at length is still answered in a few sentences.
    answer_words: int = Field(default=40, ge=5, le=400)
    # Prompt and answer tokens of one example at most; distractors are dropped (the lowest-ranked first, as the
    # prompt builder does) until an example fits, and an example whose right entry alone does not fit is skipped.
    max_tokens: int = Field(default=1536, ge=128, le=32768)
    # The gate asks this many held-out questions (and questions of withheld answers, which should be declined)
    # through the whole customer turn with the live model and then with the tuned one: two answers a question.
    gate_questions: int = Field(default=16, ge=1, le=1000)
    gate_declines: int = Field(default=4, ge=0, le=1000)
