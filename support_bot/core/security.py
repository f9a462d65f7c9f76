"""Bearer tokens stored as hashes, and the signature a host site gives an identified customer."""

from __future__ import annotations

import hashlib
import hmac


def hash_token(token: str) -> str:
    """What is stored of a bearer token: its SHA-256, so a database dump does not hand out sessions."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign_customer_id(customer_id: str, secret: str) -> str:
    """The signature a host site computes for an identified customer: hex HMAC-SHA256 of the id."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
