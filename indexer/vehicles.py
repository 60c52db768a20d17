"""The embedded per-community vehicle registry: licence plates with a role and an owner.

``VehicleRegistry`` shares the ``Store`` (SQLite) and the community authority of a
``FaceRegistry``: a community exists when the face registry says so, and registering a vehicle
in a new community creates it through ``FaceRegistry.create_community``, so faces and vehicles
always agree on which communities exist.

Each plate is stored as ``recognizer.plates.text.normalize`` writes it. In memory every
community keeps a ``_PlateIndex`` rebuilt from SQLite when the registry is opened and updated
after each committed write:

* a dict plate → ``Vehicle`` for the exact lookup;
* for the fuzzy prefilter, numpy arrays over the plates: a character histogram (one uint8 row
  per plate character, ~80 rows, a column per plate), each plate's length and its weight (the
  summed cheapest-edit costs of its characters). Columns are appended (capacity doubles) and
  a removed column is filled with the last one, so a write costs O(1) amortised.

Fuzzy matching (``match`` when there is no exact hit, ``search`` with ``fuzzy``) is the weighted
edit distance of ``indexer.plate_fuzzy`` (look-alike substitutions such as 0/D, 8/B, 2/Z cost
less than other edits) on the plates whose lower bound of that distance, computed for all
plates at once from the histograms, is within ``max_distance``: the prefilter never drops a
plate that is within it (see ``_PlateIndex.candidates``). On 10,000 random plates about two
survive it, and a fuzzy match takes ~0.1-0.2 ms.

Locking as in ``FaceRegistry``: writers are serialised by a mutex, write SQLite first and apply
the change to memory after the commit under the write side of a readers-writer lock; ``match``
and ``search`` share its read side; ``get`` and ``list`` read SQLite.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import time
import unicodedata
from collections.abc import Iterable
from typing import Final

import numpy as np

from indexer import plate_fuzzy
from indexer.locks import RWLock
from indexer.registry import MAX_RESULTS, FaceRegistry, _check_id, _check_number, _check_role
from indexer.types import Role, Vehicle, VehicleMatch
from recognizer.plates.text import PLATE_CHARACTERS, normalize
from smartgate.checks import check_text
from smartgate.errors import AlreadyExistsError, InvalidInputError, NotFoundError

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "MAX_DISTANCE",
    "MAX_OWNER_LENGTH",
    "MAX_PLATE_LENGTH",
    "Vehicle",
    "VehicleMatch",
    "VehicleRegistry",
]

#: Longest normalised plate accepted (mainland formats have 7 or 8 characters; the slack is
#: for layouts ``classify`` does not know, such as military plates).
MAX_PLATE_LENGTH: Final = 10
MAX_OWNER_LENGTH: Final = 256
DEFAULT_MAX_DISTANCE: Final = 1.0
#: Upper bound of ``max_distance``: beyond it a "match" says little and the prefilter keeps
#: most plates.
MAX_DISTANCE: Final = 3.0
#: Distances closer than this are ties (sums of fractional costs are not exact in binary).
_TIE_EPSILON: Final = 1e-9
_INDEL_COST: Final = plate_fuzzy.INDEL_COST


#: The cheapest edit of a character without look-alikes: deleting it or substituting any
#: other character (``plate_fuzzy`` charges 1 for a pair outside its table).
_DEFAULT_EDIT: Final = min(plate_fuzzy.INDEL_COST, plate_fuzzy.substitution_cost("\x00", "\x01"))


def _cheapest_edits() -> dict[str, float]:
    """Per character of the look-alike table: the cheapest edit that changes it."""
    cheapest: dict[str, float] = {}
    for (a, _), cost in plate_fuzzy.SUBSTITUTION_COSTS.items():
        cheapest[a] = min(cheapest.get(a, _DEFAULT_EDIT), cost)
    return cheapest


_CHEAPEST: Final = _cheapest_edits()
#: The characters with a histogram row of their own (every character a mainland plate can show,
#: and every character of the look-alike table); all others share the last row.
_ALPHABET: Final = "".join(dict.fromkeys(PLATE_CHARACTERS + "".join(_CHEAPEST)))
_COLUMN: Final = {c: i for i, c in enumerate(_ALPHABET)}
_OTHER: Final = len(_ALPHABET)
#: The cheapest edit of each histogram row; the shared row takes the cheapest of its members.
_ROW_COST: Final = np.array(
    [_CHEAPEST.get(c, _DEFAULT_EDIT) for c in _ALPHABET] + [_DEFAULT_EDIT],
    np.float64,
)


class _PlateIndex:
    """One community's plates: the exact dict and the arrays of the fuzzy prefilter."""

    def __init__(self) -> None:
        self.by_plate: dict[str, Vehicle] = {}
        self._row: dict[str, int] = {}
        self._plates: list[str] = []
        # counts[r, i]: how often histogram row r's character occurs in plate i (transposed,
        # so that one character's counts over all plates are contiguous).
        self._counts = np.zeros((_OTHER + 1, 0), np.uint8)
        self._weights = np.zeros(0, np.float64)  # sum of _ROW_COST over each plate's characters
        self._lengths = np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self._plates)

    def put(self, vehicle: Vehicle) -> None:
        plate = vehicle.plate
        if plate not in self._row:
            n = len(self._plates)
            if n == len(self._lengths):
                capacity = max(16, 2 * n)
                counts = np.zeros((_OTHER + 1, capacity), np.uint8)
                weights = np.zeros(capacity, np.float64)
                lengths = np.zeros(capacity, np.int32)
                counts[:, :n] = self._counts[:, :n]
                weights[:n], lengths[:n] = self._weights[:n], self._lengths[:n]
                self._counts, self._weights, self._lengths = counts, weights, lengths
            rows, counts_of = _histogram(plate)
            self._counts[rows, n] = counts_of
            self._weights[n] = float(_ROW_COST[rows] @ counts_of)
            self._lengths[n] = len(plate)
            self._row[plate] = n
            self._plates.append(plate)
        self.by_plate[plate] = vehicle

    def pop(self, plate: str) -> None:
        self.by_plate.pop(plate, None)
        row = self._row.pop(plate, None)
        if row is None:
            return
        last = len(self._plates) - 1
        if row != last:  # fill the hole with the last plate
            moved = self._plates[last]
            self._counts[:, row] = self._counts[:, last]
            self._weights[row], self._lengths[row] = self._weights[last], self._lengths[last]
            self._plates[row] = moved
            self._row[moved] = row
        self._counts[:, last], self._weights[last], self._lengths[last] = 0, 0.0, 0
        self._plates.pop()

    def candidates(self, query: str, max_distance: float) -> builtins.list[str]:
        """The plates that may lie within ``max_distance`` of ``query``: a superset of them.

        A lower bound of the weighted edit distance, computed for every plate at once from
        the character histograms. In any alignment of query ``Q`` and plate ``P``, the query
        characters not kept as equal characters form a multiset ``E`` with ``Q - E`` inside
        ``P``, so ``E`` holds the multiset difference ``Q \\ P``; each edit touches at most
        one character of ``E`` and costs at least that character's cheapest edit ``c(x)``
        (0.3 for a strong look-alike, 1 for a character without look-alike). Hence
        ``distance >= sum of c(x) over Q \\ P``, and symmetrically over ``P \\ Q``, and
        ``distance >= |len(Q) - len(P)| * INDEL_COST``. Only plates whose bound is within
        ``max_distance`` go on to the exact distance. One pass over a contiguous row of
        counts per distinct query character.
        """
        n = len(self._plates)
        if n == 0:
            return []
        limit = max_distance + _TIE_EPSILON
        rows, counts_of = _histogram(query)
        shared = np.zeros(n, np.float64)  # sum of c(x) over the characters Q and P share
        for row, count in zip(rows.tolist(), counts_of.tolist(), strict=True):
            plate_counts = self._counts[row, :n]
            if count > 1:
                plate_counts = np.minimum(plate_counts, count)
            shared += _ROW_COST[row] * plate_counts
        query_weight = float(_ROW_COST[rows] @ counts_of)
        bound = np.maximum(query_weight - shared, self._weights[:n] - shared)
        keep = bound <= limit
        keep &= np.abs(self._lengths[:n] - len(query)) * _INDEL_COST <= limit
        return [self._plates[i] for i in np.flatnonzero(keep).tolist()]


def _histogram(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The histogram rows ``text``'s characters fall in, and how often each (unknown
    characters all count in the shared row: a looser bound, never a wrong one)."""
    rows: dict[int, int] = {}
    for c in text:
        row = _COLUMN.get(c, _OTHER)
        rows[row] = rows.get(row, 0) + 1
    return np.fromiter(rows, np.intp, len(rows)), np.fromiter(rows.values(), np.float64, len(rows))


def _order(match: VehicleMatch) -> tuple[float, bool, str, str]:
    """Best first: lowest distance; ties → watchlist first (an alert must not be hidden by a
    resident look-alike), then plate, then community."""
    return (
        round(match.distance / _TIE_EPSILON) * _TIE_EPSILON,
        match.vehicle.role != "watchlist",
        match.vehicle.plate,
        match.vehicle.community,
    )


class VehicleRegistry:
    """Registered vehicles of every community, in the store of ``face_registry``.

    Close the face registry to close the store; this registry is unusable afterwards.
    Thread-safe.
    """

    def __init__(self, face_registry: FaceRegistry) -> None:
        self._faces = face_registry
        self._store = face_registry.store
        self._write_mutex = threading.Lock()
        self._rw = RWLock()
        self._indexes: dict[str, _PlateIndex] = {}
        for vehicle in self._store.vehicles():
            self._indexes.setdefault(vehicle.community, _PlateIndex()).put(vehicle)

    # -- changes --------------------------------------------------------------------------

    def add(
        self,
        community: str,
        plate: str,
        *,
        role: Role = "resident",
        owner: str = "",
        expires_at: float | None = None,
        replace: bool = False,
    ) -> Vehicle:
        """Register ``plate`` (normalised first) in ``community``; returns it as stored.

        Creates the community (through the face registry) when it does not exist. Visitors
        need ``expires_at``. A registered plate raises ``AlreadyExistsError`` unless
        ``replace``, which updates role, owner and expiry (key and creation time stay).
        """
        community = _check_id(community, "community id")
        plate = _check_plate(plate)
        role = _check_role(role)
        owner = _check_owner(owner)
        if expires_at is not None:
            expires_at = _check_number(expires_at, "expires_at")
        elif role == "visitor":
            raise InvalidInputError(f"visitor vehicle {plate!r} needs expires_at")
        with self._write_mutex:
            if not self._faces.has_community(community):
                # AlreadyExistsError: a face enrolment created it meanwhile, as good.
                with contextlib.suppress(AlreadyExistsError):
                    self._faces.create_community(community)
            vehicle = self._store.add_vehicle(
                community,
                plate,
                role=role,
                owner=owner,
                expires_at=expires_at,
                replace=bool(replace),
                now=time.time(),
            )
            with self._rw.write():
                self._indexes.setdefault(community, _PlateIndex()).put(vehicle)
        return vehicle

    def remove(self, community: str, plate: str) -> Vehicle:
        """Unregister ``plate``; returns the vehicle as it was. ``NotFoundError`` when the
        community does not exist or the plate is not registered in it."""
        community = _check_id(community, "community id")
        plate = _check_plate(plate)
        with self._write_mutex:
            vehicle = self._store.remove_vehicle(community, plate)
            with self._rw.write():
                index = self._indexes.get(community)
                if index is not None:
                    index.pop(plate)
        return vehicle

    # -- reads ----------------------------------------------------------------------------

    def get(self, community: str, plate: str) -> Vehicle:
        community = _check_id(community, "community id")
        return self._store.get_vehicle(community, _check_plate(plate))

    def list(
        self,
        community: str,
        role: Role | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> builtins.list[Vehicle]:
        """A page of vehicles ordered by plate; pass the last one's plate as ``after``."""
        community = _check_id(community, "community id")
        if role is not None:
            role = _check_role(role)
        limit = _check_limit(limit)
        if after is not None and not isinstance(after, str):
            raise InvalidInputError(f"after must be a plate string, got {type(after).__name__}")
        return self._store.list_vehicles(community, role=role, limit=limit, after=after)

    def match(
        self, community: str, text: str, max_distance: float = DEFAULT_MAX_DISTANCE
    ) -> VehicleMatch | None:
        """The registered vehicle a plate reading ``text`` names, or ``None``.

        An exact match (after normalisation) wins outright. Otherwise the plate at the lowest
        weighted edit distance ``<= max_distance`` (``fuzzy=True``); ties go to a watchlist
        plate, then to the smaller plate. Expiry is not looked at: see ``Vehicle.is_valid_at``.
        """
        community = _check_id(community, "community id")
        query = _check_plate(text, "plate text")
        max_distance = _check_distance(max_distance)
        with self._rw.read():
            index = self._index(community)
            if index is None:
                return None
            exact = index.by_plate.get(query)
            if exact is not None:
                return VehicleMatch(exact, 0.0, False)
            found = _fuzzy(index, query, max_distance)
        return min(found, key=_order) if found else None

    def search(
        self,
        communities: Iterable[str],
        text: str,
        *,
        fuzzy: bool = True,
        max_distance: float = DEFAULT_MAX_DISTANCE,
        limit: int = 10,
    ) -> builtins.list[VehicleMatch]:
        """Vehicles of one or more ``communities`` named by the plate reading ``text``, best
        first (as ``match`` orders them, then by community).

        Without ``fuzzy`` only exact matches (one per community at most); with it, every plate
        within ``max_distance``, exact ones included (distance 0). ``NotFoundError`` names the
        first community that does not exist.
        """
        if isinstance(communities, str):
            raise InvalidInputError("communities must be a list of community ids, not a string")
        wanted = builtins.list(dict.fromkeys(_check_id(c, "community id") for c in communities))
        if not wanted:
            raise InvalidInputError("communities must name at least one community")
        query = _check_plate(text, "plate text")
        max_distance = _check_distance(max_distance)
        limit = _check_limit(limit)
        found: builtins.list[VehicleMatch] = []
        with self._rw.read():
            indexes = [self._index(c) for c in wanted]  # every community checked first
            for index in indexes:
                if index is None:
                    continue
                exact = index.by_plate.get(query)
                if exact is not None:
                    found.append(VehicleMatch(exact, 0.0, False))
                if fuzzy:
                    found.extend(_fuzzy(index, query, max_distance))
        found.sort(key=_order)
        return found[:limit]

    def indexed_vehicles(self, community: str) -> int:
        """How many plates the community's in-memory index holds."""
        community = _check_id(community, "community id")
        with self._rw.read():
            index = self._index(community)
            return 0 if index is None else len(index)

    def _index(self, community: str) -> _PlateIndex | None:
        """The community's plate index; ``None`` when it exists but has no vehicle yet."""
        index = self._indexes.get(community)
        if index is None and not self._faces.has_community(community):
            raise NotFoundError(f"community {community!r} does not exist")
        return index


def _fuzzy(index: _PlateIndex, query: str, max_distance: float) -> builtins.list[VehicleMatch]:
    """Every plate of ``index`` other than ``query`` within ``max_distance`` of it."""
    candidates = [p for p in index.candidates(query, max_distance) if p != query]
    return [
        VehicleMatch(index.by_plate[plate], float(distance), True)
        for plate, distance in plate_fuzzy.best_matches(query, candidates, max_distance)
    ]


def _check_plate(value: object, what: str = "plate") -> str:
    """Normalise a plate; refuse non-strings, control characters, empty and too long text."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > 4 * MAX_PLATE_LENGTH:  # bound the work before normalising
        raise InvalidInputError(f"{what} is too long ({len(value)} characters)")
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise InvalidInputError(f"{what} {value!r} holds control or non-printable characters")
    plate = normalize(value)
    if not plate:
        raise InvalidInputError(f"{what} {value!r} holds no plate characters")
    if len(plate) > MAX_PLATE_LENGTH:
        raise InvalidInputError(
            f"{what} {plate!r} is too long: at most {MAX_PLATE_LENGTH} characters, got {len(plate)}"
        )
    if not plate.isprintable():
        raise InvalidInputError(f"{what} {value!r} holds control or non-printable characters")
    return plate


def _check_owner(value: object) -> str:
    return check_text(value, "owner", MAX_OWNER_LENGTH, required=False)


def _check_distance(value: object) -> float:
    distance = _check_number(value, "max_distance")
    if not 0.0 <= distance <= MAX_DISTANCE:
        raise InvalidInputError(
            f"max_distance must be between 0 and {MAX_DISTANCE}, got {distance}"
        )
    return distance


def _check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"limit must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_RESULTS:
        raise InvalidInputError(f"limit must be between 1 and {MAX_RESULTS}, got {value}")
    return int(value)
