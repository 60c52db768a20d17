"""One error hierarchy for the whole project.

Library code raises these; ``cluster.status`` maps each class to a gRPC status code in one
place. Messages are written for the person who sent the request: they say what was wrong.
"""

from __future__ import annotations


class SmartgateError(Exception):
    """Base class of every error smartgate raises on purpose."""


class InvalidInputError(SmartgateError):
    """A request or argument is malformed (maps to INVALID_ARGUMENT)."""


class DecodeError(InvalidInputError):
    """An image payload is not a decodable JPEG/PNG, is truncated, or is too large."""


class EnrollmentError(InvalidInputError):
    """An enrolment photo cannot be used (no face, several faces, poor quality)."""


class NotFoundError(SmartgateError):
    """A community, person or vehicle does not exist (maps to NOT_FOUND)."""


class AlreadyExistsError(SmartgateError):
    """The thing to create exists already (maps to ALREADY_EXISTS)."""


class ModelError(SmartgateError):
    """A model is missing, altered or unusable (maps to FAILED_PRECONDITION)."""


class OverloadedError(SmartgateError):
    """The node sheds work it cannot do in time (maps to RESOURCE_EXHAUSTED)."""


class UnavailableError(SmartgateError):
    """The node cannot serve yet (models loading) or any more (maps to UNAVAILABLE)."""


class ConfigError(SmartgateError):
    """The configuration is invalid."""


class UnauthenticatedError(SmartgateError):
    """No credential, or one that is invalid or expired (maps to UNAUTHENTICATED)."""


class PermissionDeniedError(SmartgateError):
    """The caller is known but may not do this (maps to PERMISSION_DENIED)."""


class ConflictError(SmartgateError):
    """The request contradicts stored state, e.g. an enrolment photo that already belongs to
    another person (maps to FAILED_PRECONDITION)."""


class RateLimitedError(OverloadedError):
    """A device or caller sends faster than its allowance (maps to RESOURCE_EXHAUSTED)."""
