"""The one place where smartgate errors become gRPC status codes."""

from __future__ import annotations

from typing import NoReturn

import grpc

from smartgate import errors

# Most specific first: the first matching class wins.
_CODES: tuple[tuple[type[errors.SmartgateError], grpc.StatusCode], ...] = (
    (errors.InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC code for ``exc``; anything unexpected is INTERNAL."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def status_message(exc: BaseException) -> str:
    if isinstance(exc, errors.SmartgateError):
        return str(exc)
    return f"internal error ({type(exc).__name__}); the server log has the details"


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status that ``exc`` maps to."""
    context.abort(status_code(exc), status_message(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
