"""Pure checks of the index actor's retried writes (``CommunityIndex`` with ``retry=True``).

A write whose index actor died mid-call is sent again by the frontend, marked as a retry
(``IndexDirectory.write``). Whether the lost attempt committed is unknown, so the actor judges
the retry by the state it finds: a retried enrolment or vehicle registration that meets an
existing entry succeeds only when that entry is exactly what the request asks for (these
functions); anything else is the usual ``AlreadyExistsError``.
"""

from __future__ import annotations

import numpy as np

from indexer.face_index import check_vectors
from indexer.types import Person, Role, Vehicle


def _same_expiry(stored: float | None, requested: float | None) -> bool:
    if stored is None or requested is None:
        return stored is requested
    return float(stored) == float(requested)


def same_enrolment(
    stored: Person,
    stored_embeddings: np.ndarray,
    embeddings: np.ndarray,
    name: str,
    role: Role,
    expires_at: float | None,
    dim: int,
) -> bool:
    """Whether ``stored`` (with its templates ``stored_embeddings`` ``(n, dim)`` float32, in
    enrolment order) is exactly the enrolment requested: the same name, role and expiry, and
    templates bit-equal to ``embeddings`` ``(n, dim)`` after the registry's own check
    (``check_vectors``: float32, C-contiguous; it does not rescale)."""
    if stored.name != name or stored.role != role:
        return False
    if not _same_expiry(stored.expires_at, expires_at):
        return False
    requested = check_vectors(embeddings, dim, "embeddings")
    held = np.asarray(stored_embeddings)
    return (
        held.dtype == np.float32
        and held.shape == requested.shape
        and np.array_equal(held, requested)
    )


def same_vehicle(stored: Vehicle, role: Role, owner: str, expires_at: float | None) -> bool:
    """Whether the registered ``stored`` is exactly the registration requested (its plate is
    the request's, normalised: the registry looked it up by that)."""
    return (
        stored.role == role
        and stored.owner == owner
        and _same_expiry(stored.expires_at, expires_at)
    )
