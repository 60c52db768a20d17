"""Value types of the registry: ``Person``, ``Identification``, ``Vehicle``, ``VehicleMatch``
and the roles (shared by persons and vehicles)."""

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


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One registered licence plate of one community, as stored.

    ``key`` is the registry's internal integer id (stable for the life of the registration);
    ``plate`` is the normalised plate text (``recognizer.plates.text.normalize``), unique within
    ``community``. ``owner`` is a free-text reference (a person id, a unit number, ...). Times
    are Unix seconds; visitors always carry ``expires_at``.
    """

    key: int
    community: str
    plate: str
    role: Role
    owner: str
    expires_at: float | None
    created_at: float

    def is_valid_at(self, t: float) -> bool:
        """Whether the registration is in force at Unix time ``t`` (``expires_at`` ends it at
        that instant; none means it never expires). Matching still finds expired vehicles: what
        an expired visitor means (no opening) is the caller's decision."""
        return self.expires_at is None or t < self.expires_at


@dataclass(frozen=True, slots=True)
class VehicleMatch:
    """A registered vehicle found for a plate reading.

    ``distance`` is the weighted edit distance between the normalised reading and
    ``vehicle.plate`` (``0.0`` for an exact match); ``fuzzy`` is true when the plates differ,
    i.e. the match relies on look-alike characters or OCR edits.
    """

    vehicle: Vehicle
    distance: float
    fuzzy: bool
