"""Identities to vectors: the per-community face registry, its FAISS indexes and its SQLite store.

``FaceRegistry`` is the embedded (single-process) entry point; ``FaceIndex`` and ``Store`` are its
parts. See ``indexer/README.md`` for one line per module and the test that covers it.
"""

from __future__ import annotations

from indexer.face_index import FaceIndex
from indexer.registry import FaceRegistry
from indexer.store import Store
from indexer.types import ROLES, Identification, Person, Role

__all__ = ["ROLES", "FaceIndex", "FaceRegistry", "Identification", "Person", "Role", "Store"]
