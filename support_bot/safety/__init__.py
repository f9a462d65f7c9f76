"""Safety: input guard, output guard, PII redaction, Llama Guard adapter and the safety evaluation."""

from __future__ import annotations

from support_bot.safety.eval import eval_safety
from support_bot.safety.input_guard import InputGuard, Signal, Verdict
from support_bot.safety.llama_guard import GuardResult, LlamaGuard
from support_bot.safety.output_guard import OutputGuard, OutputVerdict, make_canary, system_prompt_with_canary
from support_bot.safety.policy import caution_note, reply_for

__all__ = [
    "GuardResult",
    "InputGuard",
    "LlamaGuard",
    "OutputGuard",
    "OutputVerdict",
    "Signal",
    "Verdict",
    "caution_note",
    "eval_safety",
    "make_canary",
    "reply_for",
    "system_prompt_with_canary",
]
