"""Exporting the audit log: CSV and JSON, streamed row by row so a year of events never sits in memory."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from .models import Event

__all__ = ["AUDIT_COLUMNS", "audit_csv_response", "audit_json_response", "audit_row", "safe_cell"]

AUDIT_COLUMNS = ["id", "created_at", "kind", "level", "actor", "actor_id", "app_id", "gateway", "node", "subject",
                 "message", "data"]
_CHUNK = 500
# A cell a spreadsheet would run as a formula (CSV injection): messages can quote user-chosen text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def audit_row(event: Event) -> dict[str, Any]:
    return {
        "id": event.pk,
        "created_at": event.created_at.isoformat(),
        "kind": event.kind,
        "level": event.level,
        "actor": event.actor_name,
        "actor_id": event.actor_id,
        "app_id": event.app_id,
        "gateway": event.gateway.name if event.gateway_id and event.gateway else None,
        "node": event.node.name if event.node_id and event.node else None,
        "subject": event.subject,
        "message": event.message,
        "data": event.data,
    }


def _events(queryset: QuerySet[Event]) -> Iterator[Event]:
    return queryset.select_related("gateway", "node").iterator(chunk_size=_CHUNK)


def _safe_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# Other exports (the portal's address list) guard their cells with the same rule.
safe_cell = _safe_cell


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields rows one at a time."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(events: Iterable[Event]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(AUDIT_COLUMNS)
    for event in events:
        row = audit_row(event)
        yield writer.writerow([_safe_cell(row[c]) for c in AUDIT_COLUMNS])


def _json_chunks(events: Iterable[Event]) -> Iterator[str]:
    yield "["
    first = True
    for event in events:
        yield ("" if first else ",") + "\n" + json.dumps(audit_row(event), sort_keys=True)
        first = False
    yield "\n]\n"


def _filename(extension: str) -> str:
    return f"audit-{timezone.now():%Y%m%dT%H%M%SZ}.{extension}"


def audit_csv_response(queryset: QuerySet[Event]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_csv_lines(_events(queryset)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename("csv")}"'
    return response


def audit_json_response(queryset: QuerySet[Event]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_json_chunks(_events(queryset)), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_filename("json")}"'
    return response
