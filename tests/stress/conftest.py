"""The stress tests' emulators: Azurite comes from tests/conftest.py; the Firestore emulator
fixture is the contract suite's, shared here."""

from __future__ import annotations

from tests.contract.conftest import firestore_emulator

__all__ = ["firestore_emulator"]
