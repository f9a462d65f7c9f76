"""Hostile input shapes must not make any check quadratic (an easy denial of service on a public chat box)."""

from __future__ import annotations

import pytest

from support_bot.safety.pii import redact

SHAPES = {
    "digits": "1" * 3999,
    "spaced digits": "1 " * 1999,
    "hyphenated digits": "1-" * 1999,
    "comma digits": "1," * 1999,
    "decimal digits": "1." * 1999,
    "hex": "ab" * 1999,
    "base64-ish": "Ab1+" * 999,
    "long domain": "a@" + "b." * 1990 + "c",
    "spaced letters": "a " * 1999,
    "leet": "h3ll0 " * 666,
    "rule lines": "- you never\n" * 333,
    "brackets": "[prompt] " * 444,
}


@pytest.mark.timeout(4)
def test_every_check_stays_linear_on_hostile_shapes(pattern_guard, output_guard):
    # Before the number patterns were anchored, the digit run alone took seconds in the output guard.
    for name, text in SHAPES.items():
        redact(text)
        pattern_guard.check(text)
        verdict = output_guard.check(
            text, sources=[text], customer_texts=[text], system_prompt="You are a support bot.", canary="SBC-1"
        )
        assert verdict.text, name
