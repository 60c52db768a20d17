"""Value types of the registry: ``Person``, ``Identification`` and the person roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["resident", "visitor", "watchlist"]
ROLES: Final[tuple[Role, ...]] = ("resident", "visitor", "watchlist")


@dataclass(frozen=True, slots=True)
class Person:
    """One enrolled person of one community, as stored.

    ``key`` is the registry's internal integer id (stable for the life of the person);
    ``person_id`` is the caller's id, unique within ``community``. Times are Unix seconds.
    """

    key: int
    community: str
    person_id: str
    name: str
    role: Role
    expires_at: float | None
    created_at: float
    template_count: int

    def is_valid_at(self, t: float) -> bool:
        """Whether the person's enrolment is in force at Unix time ``t``.

        ``expires_at`` (normally set for visitors) ends the enrolment at that instant; a person
        without one never expires. The registry itself still identifies expired persons: what an
        expired match means (no door opening) is the caller's decision.
        """
        return self.expires_at is None or t < self.expires_at


@dataclass(frozen=True, slots=True)
class Identification:
    """The identity decision for one query embedding.

    ``candidate`` is the best-scoring person among the query's k nearest templates (``None``
    when the community has no templates); ``person`` is that same person only when the match is
    ``accepted`` (``score >= threshold`` and ``score - runner_up >= margin``), else ``None``.
    ``score`` and ``runner_up`` are cosine similarities, ``-1.0`` when there was no such person.
    """

    person: Person | None
    candidate: Person | None
    score: float
    runner_up: float
    accepted: bool
