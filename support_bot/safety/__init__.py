"""Safety: input guard, output guard, PII redaction, Llama Guard adapter and the safety evaluation."""

from __future__ import annotations

from support_bot.safety.input_guard import InputGuard, Signal, Verdict
from support_bot.safety.output_guard import OutputGuard, OutputVerdict, make_canary, system_prompt_with_canary

__all__ = [
    "InputGuard",
    "OutputGuard",
    "OutputVerdict",
    "Signal",
    "Verdict",
    "make_canary",
    "system_prompt_with_canary",
]
