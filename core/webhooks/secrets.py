"""Signing secrets: made here, shown once, kept sealed in the store when a key is set.

A secret is Standard Webhooks' `whsec_` + base64 of 24 random bytes. The store keeps it sealed
with AES-GCM under SCHEDULER_SECRETS_KEY (32 bytes, base64) when that is set; without it the
secret is kept as it is (the store's own encryption at rest is then all it has). Signing needs
the secret itself, so it cannot be hashed like an API key.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from core.errors import ConfigError

PREFIX = "whsec_"
SEALED = "aesgcm:"
PLAIN = "plain:"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def seal(secret: str, key: str | None) -> str:
    if key is None:
        return PLAIN + secret
    nonce = secrets.token_bytes(12)
    sealed = _aead(key).encrypt(nonce, secret.encode(), None)
    return SEALED + base64.b64encode(nonce + sealed).decode()


def unseal(stored: str, key: str | None) -> str:
    if stored.startswith(PLAIN):
        return stored[len(PLAIN) :]
    if key is None:
        raise ConfigError("a signing secret is sealed, but SCHEDULER_SECRETS_KEY is not set")
    raw = base64.b64decode(stored[len(SEALED) :])
    plain: bytes = _aead(key).decrypt(raw[:12], raw[12:], None)
    return plain.decode()


def _aead(key: str):  # type: ignore[no-untyped-def]
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigError("SCHEDULER_SECRETS_KEY needs the cryptography package") from exc
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "SCHEDULER_SECRETS_KEY must be 32 bytes in base64 (openssl rand -base64 32)"
        )
    return AESGCM(raw)
