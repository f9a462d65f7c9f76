"""Password hashing and the password rules."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, extract_parameters

from support_bot.ops import auth
from support_bot.core.errors import InvalidInput
from support_bot.models import User


def test_hashes_are_salted_argon2id_and_verify():
    first, second = auth.hash_password("s3cret-password"), auth.hash_password("s3cret-password")
    assert first.startswith("$argon2id$") and first != second
    assert "s3cret-password" not in first
    assert auth.verify_password(first, "s3cret-password") and auth.verify_password(second, "s3cret-password")
    assert not auth.verify_password(first, "s3cret-passwore")
    assert not auth.verify_password(first, "")


def test_a_broken_stored_hash_never_verifies():
    assert not auth.verify_password("not-a-hash", "anything")
    assert not auth.verify_password("", "")


def test_production_parameters_are_at_least_the_recommended_minimum():
    params = extract_parameters(auth._new_hasher().hash("x"))
    assert params.type.name == "ID" and params.memory_cost >= 65536 and params.time_cost >= 3


def test_generated_passwords_are_random_and_pass_the_rules(settings):
    passwords = {auth.generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for p in passwords:
        auth.check_password_strength(p, settings=settings)


@pytest.mark.parametrize("password", ["short", "aaaaaaaaaaaaaa", "x" * (auth.MAX_PASSWORD_CHARS + 1)])
def test_weak_or_oversized_passwords_are_refused(settings, password):
    with pytest.raises(InvalidInput):
        auth.check_password_strength(password, settings=settings)


def test_minimum_length_follows_the_setting(settings):
    strict = settings.model_copy(update={"console": settings.console.model_copy(update={"min_password_length": 20})})
    auth.check_password_strength("a-long-enough-pass", settings=settings)
    with pytest.raises(InvalidInput, match="20 characters"):
        auth.check_password_strength("a-long-enough-pass", settings=strict)


def test_an_old_weaker_hash_is_upgraded_at_login(db, monkeypatch):
    from support_bot.core.db import session_scope

    weak = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1)
    with session_scope(db) as session:
        session.add(User(username="old", role="agent", password_hash=weak.hash("an-old-password")))
    with session_scope(db) as session:
        assert auth.authenticate(session, settings=db, username="old", password="an-old-password") is not None
    with session_scope(db) as session:
        stored = session.query(User).filter_by(username="old").one().password_hash
    assert extract_parameters(stored).memory_cost == auth._hasher.memory_cost != 512
    with session_scope(db) as session:
        assert auth.authenticate(session, settings=db, username="old", password="an-old-password") is not None
