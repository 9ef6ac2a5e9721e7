"""One error shape for the whole API.

Every error answers ``{"error": {"code": ..., "message": ..., "fields": {...}}}``:
``code`` is stable for programs, ``message`` is a sentence a person can act on,
``fields`` (only for input problems) maps each field to its messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from egressportal.core.errors import DomainError
from egressportal.core.limits import max_body_bytes

__all__ = ["api_exception_handler", "error_body", "flatten_errors", "not_found_view"]

logger = logging.getLogger(__name__)

NON_FIELD = "non_field_errors"

_MESSAGES = {
    "not_authenticated": "Authenticate with 'Authorization: Token <your token>' or log in to the portal first.",
    "authentication_failed": "The token or credentials are not valid; check them or ask for a new token.",
    "permission_denied": "You do not have permission to do this; only platform staff can.",
    "not_found": "Nothing here: the object does not exist or is not yours.",
    "unsupported_media_type": "Send the body as JSON, with 'Content-Type: application/json'.",
}


def error_body(code: str, message: str, fields: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(fields)
    return {"error": error}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF/Django error details as {"field": ["message", ...]}; nested fields get dotted names."""
    out: dict[str, list[str]] = {}

    def add(key: str, message: Any) -> None:
        out.setdefault(key or NON_FIELD, []).append(str(message))

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                sub = NON_FIELD if sub in (NON_FIELD_ERRORS, NON_FIELD) and not key else str(sub)
                walk(inner, f"{key}.{sub}" if key else sub)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, key)
        else:
            add(key, value)

    walk(detail, prefix)
    return out


def _django_validation_detail(exc: DjangoValidationError) -> Any:
    if hasattr(exc, "error_dict"):
        return {field: [m for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return list(exc.messages)


def _summary(fields: dict[str, list[str]]) -> str:
    """One sentence naming the first problem (and how many more there are)."""
    field, messages = next(iter(fields.items()))
    first = messages[0] if messages else "This value is not valid."
    text = first if field == NON_FIELD else f"{field}: {first}"
    more = sum(len(m) for m in fields.values()) - 1
    if more > 0:
        text += f" (and {more} more problem{'s' if more > 1 else ''}; see 'fields')"
    return text


def _validation_response(detail: Any) -> Response:
    fields = flatten_errors(detail)
    if not fields:
        fields = {NON_FIELD: ["This request is not valid."]}
    return Response(error_body("invalid", _summary(fields), fields), status=status.HTTP_400_BAD_REQUEST)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        return _validation_response(_django_validation_detail(exc))
    if isinstance(exc, RequestDataTooBig):
        # DRF reads JSON through request.body, where Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE.
        return Response(
            error_body("too_large", f"The request body is larger than {max_body_bytes()} bytes; send less in one request."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message), status=exc.status_code)
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        return Response(error_body("not_found", _MESSAGES["not_found"]), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, IntegrityError):
        # A concurrent request won a race the services' checks could not see.
        logger.info("API integrity conflict: %s", exc)
        return Response(
            error_body("conflict", "This conflicts with a change made at the same time; reload and try again."),
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, (DataError, OverflowError)):
        # Input the validators let through but the database refuses (a last guard).
        logger.warning("API input refused by the database: %s", exc)
        return Response(
            error_body("invalid", "A value in this request is out of range or not valid text; check it and try again."),
            status=status.HTTP_400_BAD_REQUEST,
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a genuine bug: let Django log it and answer 500
    if isinstance(exc, exceptions.ValidationError):
        validation = _validation_response(exc.detail)
        validation.headers = response.headers
        return validation
    code = exc.default_code if isinstance(exc, exceptions.APIException) else "error"
    detail = getattr(exc, "detail", "")
    if isinstance(detail, (list, dict)):
        message = _summary(flatten_errors(detail))
    else:
        default = getattr(exc, "default_detail", None)
        message = _MESSAGES[code] if code in _MESSAGES and str(detail) == str(default) else str(detail)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        message = f"{_MESSAGES['unsupported_media_type']} ({str(detail)[:120]})"
    if isinstance(exc, exceptions.Throttled):
        code = "throttled"
        wait = f" Try again in {exc.wait:.0f} seconds." if exc.wait is not None else " Try again later."
        message = "Too many requests." + wait
    response.data = error_body(code, message)
    return response


@csrf_exempt  # it changes nothing; without this an unknown path answers a CSRF page, not 404
def not_found_view(request: Any, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under the API answer in the API's error shape, not with an HTML page."""
    return JsonResponse(
        error_body("not_found", "There is no API endpoint at this path; see /api/v1/docs/."), status=404
    )
