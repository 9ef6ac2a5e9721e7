"""Filtering and ordering for list endpoints."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from egressportal.core.models import App, EgressStatus, Event, Gateway, IPPool, Node

__all__ = ["AppFilterSet", "AuditFilterSet", "HostFilterSet", "PoolFilterSet", "WhitelistOrderingFilter"]


class AppFilterSet(django_filters.FilterSet):
    region = django_filters.CharFilter(field_name="region__slug", help_text="Region slug.")
    status = django_filters.ChoiceFilter(
        field_name="egress_status", choices=EgressStatus.choices, help_text="Egress status."
    )
    name = django_filters.CharFilter(field_name="name", help_text="Exact app name.")

    class Meta:
        model = App
        fields = ["region", "status", "name"]


class PoolFilterSet(django_filters.FilterSet):
    region = django_filters.CharFilter(field_name="region__slug", help_text="Region slug.")

    class Meta:
        model = IPPool
        fields = ["region"]


class AuditFilterSet(django_filters.FilterSet):
    kind = django_filters.CharFilter(
        method="filter_kind",
        help_text="Event kind, e.g. 'gateway.updated'; a trailing '.' matches a family, e.g. 'gateway.'.",
    )
    actor = django_filters.CharFilter(field_name="actor_name", help_text="Who: a user name, 'worker' or 'system'.")
    app = django_filters.NumberFilter(field_name="app_id", help_text="App id.")
    gateway = django_filters.CharFilter(field_name="gateway__name", help_text="Gateway name.")
    node = django_filters.CharFilter(field_name="node__name", help_text="Node name.")
    level = django_filters.CharFilter(field_name="level", help_text="info, warning or error.")
    since = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601 time; events at or after it."
    )
    until = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601 time; events before it."
    )

    class Meta:
        model = Event
        fields = ["kind", "actor", "app", "gateway", "node", "level", "since", "until"]

    def filter_kind(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value.endswith("."):
            return queryset.filter(kind__startswith=value)
        return queryset.filter(kind=value)


class HostFilterSet(django_filters.FilterSet):
    region = django_filters.CharFilter(field_name="region__slug", help_text="Region slug.")

    class Meta:
        fields = ["region", "enabled", "health"]


def host_filterset(model: type[Gateway] | type[Node]) -> type[django_filters.FilterSet]:
    meta = type("Meta", (HostFilterSet.Meta,), {"model": model})
    return type(f"{model.__name__}FilterSet", (HostFilterSet,), {"Meta": meta})


class WhitelistOrderingFilter(OrderingFilter):
    """``?ordering=name,-created_at``: only the names in the view's
    ``ordering_fields`` mapping (public name -> model path, or a tuple of paths);
    ties broken by primary key so pages are stable."""

    def get_valid_fields(self, queryset: QuerySet, view: Any, context: Any = None) -> list[tuple[str, str]]:
        return [(name, name) for name in getattr(view, "ordering_fields", {})]

    def get_ordering(self, request: Any, queryset: QuerySet, view: Any) -> list[str] | None:
        raw = request.query_params.get(self.ordering_param)
        if not raw:
            return self.get_default_ordering(view)
        allowed: dict[str, str | tuple[str, ...]] = getattr(view, "ordering_fields", {})
        ordering = []
        for term in (t.strip() for t in raw.split(",")):
            if not term:
                continue
            name = term.removeprefix("-")
            if name not in allowed:
                raise ValidationError(
                    {self.ordering_param: [f"Cannot order by '{name[:40]}'; use one of: {', '.join(allowed)}."]}
                )
            sign = "-" if term.startswith("-") else ""
            paths = allowed[name]
            # A public name may stand for several columns (a pool's CIDR: family, then the address).
            ordering += [sign + path for path in ((paths,) if isinstance(paths, str) else paths)]
        return [*ordering, "pk"] if ordering else self.get_default_ordering(view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params = super().get_schema_operation_parameters(view)
        names = ", ".join(getattr(view, "ordering_fields", {}))
        for param in params:
            param["description"] = f"Comma-separated fields to order by, '-' for descending: {names}."
        return params
