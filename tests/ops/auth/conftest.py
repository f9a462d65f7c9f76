"""Auth fixtures: every test here hashes passwords with cheap argon2id parameters."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fast_hashing(fast_hashing):
    """The shared fixture (tests/conftest.py) for every test here: they hash many passwords, and what they check
    does not depend on the cost."""
