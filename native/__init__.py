"""Cython kernels for the hot paths, each with a numpy reference in ``native.reference``.

Temporary dispatch: the Cython kernels are being written; until then the references serve.
"""

from __future__ import annotations

from native.reference import match_identities_ref as match_identities
from native.types import MatchArrays

__all__ = ["MatchArrays", "match_identities"]
