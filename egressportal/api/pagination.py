"""Limit/offset pages: 50 by default, at most 500."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

__all__ = ["ApiPagination", "KeysFirstPagination"]


class ApiPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class KeysFirstPagination(ApiPagination):
    """For big lists (apps): the page's keys first, in the list's order, then its rows by key. At 10,000
    apps a deep page made PostgreSQL sort all the wide joined rows, on disk (~35 ms); sorting the narrow
    keys stays in memory. One query more, the same for every page."""

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any] | None:
        keys = super().paginate_queryset(queryset.prefetch_related(None).values_list("pk", flat=True), request, view)
        if keys is None:
            return None
        rows = {row.pk: row for row in queryset.filter(pk__in=keys).order_by()}
        return [rows[key] for key in keys if key in rows]  # a row deleted in between is left out
