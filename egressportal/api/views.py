"""REST API v1: thin views over egressportal.core.selectors (reads, tenant
scoping) and egressportal.core.services (every write)."""

from __future__ import annotations

from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, NotFound, ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from egressportal.core import limits, selectors, services
from egressportal.core.models import App, EgressType, Event, Gateway, Node, Region
from egressportal.tokens import selectors as token_selectors
from egressportal.tokens import services as token_services
from egressportal.tokens.models import ApiToken

from . import serializers as s
from .exceptions import api_exception_handler
from .filters import AppFilterSet, AuditFilterSet, PoolFilterSet, WhitelistOrderingFilter, host_filterset
from .pagination import ApiPagination, KeysFirstPagination
from .parsers import ApiJSONParser, find_unstorable_text
from .permissions import PlacementsPermission, StaffModelPermission, StaffOrPlatformReadOnly
from .schema import ApiAutoSchema, ErrorSerializer
from .throttling import AnonThrottle, UserThrottle

__all__ = [
    "AddressViewSet",
    "ApiTokenViewSet",
    "AppViewSet",
    "AuditViewSet",
    "GatewayViewSet",
    "NodeViewSet",
    "PoolViewSet",
    "RegionViewSet",
]

CONFLICT = OpenApiResponse(ErrorSerializer, description="The current state does not allow this.")


class ApiViewMixin:
    """What every API view shares: auth, throttles, parsing, pagination, one error shape."""

    schema = ApiAutoSchema()
    permission_classes = [IsAuthenticated]
    throttle_classes = [AnonThrottle, UserThrottle]
    # JSON both ways: bodies are parsed (and advertised in the schema) as JSON only, answers are JSON only
    # (no browsable API: its forms would render related objects, e.g. every user name).
    parser_classes = [ApiJSONParser]
    renderer_classes = [JSONRenderer]
    pagination_class = ApiPagination
    filter_backends = [DjangoFilterBackend, SearchFilter, WhitelistOrderingFilter]

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def perform_authentication(self, request: Request) -> None:
        # Throttle right after authentication, before permissions, so anonymous
        # callers and guessed tokens (then anonymous) count against the anon rate.
        try:
            request.user  # noqa: B018 - authenticates
        except AuthenticationFailed:
            self.check_throttles(request)
            raise
        self.check_throttles(request)

    def check_throttles(self, request: Request) -> None:
        if getattr(self, "_throttles_checked", False):
            return
        self._throttles_checked = True
        super().check_throttles(request)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles first
        # Text no database column can hold (NUL, lone surrogates) is refused
        # here, before a validator or a lookup hands it to the database.
        if find_unstorable_text(kwargs):
            raise NotFound()
        for name, values in request.query_params.lists():
            if len(name) > limits.MAX_QUERY_VALUE_CHARS or any(len(v) > limits.MAX_QUERY_VALUE_CHARS for v in values):
                raise ValidationError(
                    {name[:40]: [f"At most {limits.MAX_QUERY_VALUE_CHARS} characters are accepted here."]}
                )
        for source in (request.query_params, request.data if request.method not in ("GET", "HEAD", "OPTIONS") else {}):
            found = find_unstorable_text(source)
            if found:
                field, problem = found
                raise ValidationError({field: [f"This value {problem}."]})


# Apps -----------------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List your apps (staff: all apps)"),
    create=extend_schema(summary="Create an app", responses={201: s.AppSerializer}),
    retrieve=extend_schema(summary="Get an app"),
    partial_update=extend_schema(summary="Rename an app (where it runs is reported by the platform, not set here)"),
    destroy=extend_schema(
        summary="Delete an app",
        description="204 when the app is gone; 202 with the app when deletion waits for its egress IPs to be released.",
        responses={204: OpenApiResponse(description="Deleted."), 202: s.AppSerializer, 409: CONFLICT},
    ),
)
class AppViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Apps: yours (staff: everyone's). Another user's app answers 404, exactly like a missing one."""

    serializer_class = s.AppSerializer
    pagination_class = KeysFirstPagination
    filterset_class = AppFilterSet
    search_fields = ["name"]
    ordering_fields = {
        "name": "name",
        "created_at": "created_at",
        "id": "id",
        "region": "region__slug",
        "status": "egress_status",
    }

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return App.objects.none()
        return selectors.app_list(user=self.request.user)

    def get_object(self) -> App:
        # Someone else's app and a missing app are the same 404 (never a 403).
        try:
            return selectors.app_get(user=self.request.user, pk=self.kwargs["pk"])
        except App.DoesNotExist:
            raise NotFound() from None

    def _fresh(self, app: App) -> App:
        """Reload through the selector so the answer shows committed state with its prefetches (as its
        owner sees it: the platform creating an app for someone gets the app it just created)."""
        return selectors.app_get(user=app.owner, pk=app.pk)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        app = self._fresh(serializer.save())
        return Response(self.get_serializer(app).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        app = self._fresh(serializer.save())
        return Response(self.get_serializer(app).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        app = self.get_object()
        if services.app_delete(app=app, actor=request.user):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.get_serializer(self._fresh(app)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(methods=["GET"], summary="Get an app's egress", responses={200: s.EgressSerializer})
    @extend_schema(
        methods=["PUT"],
        summary="Set an app's egress type (idempotent)",
        description=(
            "202 with the egress object when the change started and work is pending (status assigning or "
            "releasing); 200 when nothing had to change. 409 when the region's pools are exhausted "
            "(code pool_exhausted), it has no gateways (no_gateways) or the app cannot change now (conflict); "
            "nothing is allocated then."
        ),
        request=s.EgressRequestSerializer,
        responses={200: s.EgressSerializer, 202: s.EgressSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["get", "put"], url_path="egress", filter_backends=[], pagination_class=None)
    def egress(self, request: Request, pk: str | None = None) -> Response:
        # Only what the egress object shows (polled while a toggle settles): no placements, owner or region.
        # The PUT's write reads and locks the app itself; here it is only who may, and the region's IPv6.
        try:
            app = selectors.app_egress_get(user=request.user, pk=pk, addresses=request.method == "GET")
        except App.DoesNotExist:
            raise NotFound() from None
        if request.method == "GET":
            return Response(s.EGRESS.to_representation(selectors.egress_summary(app)))
        body = s.EgressRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # The answer comes from what the write holds (committed: the app as written, its assigned addresses).
        written, changed = services.egress_set(app=app, egress_type=body.validated_data["type"], actor=request.user)
        code = status.HTTP_202_ACCEPTED if changed and written.is_pending else status.HTTP_200_OK
        summary = selectors.egress_summary(written, ipv6_available=app.region_ipv6)
        return Response(s.EGRESS.to_representation(summary), status=code)

    @extend_schema(
        summary="Set the egress type of many apps in one request",
        description=(
            "For automation: up to 1,000 apps, each at most once. Per-item results, not all or nothing: "
            "each app is decided exactly as PUT /apps/{id}/egress/ would decide it (the enables together, in "
            "one transaction), and its result carries the status that PUT would have answered (200 nothing to change, 202 "
            "started, 404 not yours or missing, 409 pools exhausted / no gateways / conflict, 400 refused) "
            "with the egress object or the error. An app that fails leaves the others untouched and is "
            "itself unchanged. The request answers 200 when it was processed (whatever the items' results), "
            "400 when the body is invalid (nothing changed then). Results come in the request's order."
        ),
        request=s.EgressBulkSerializer,
        responses={200: s.EgressBulkResponseSerializer},
    )
    @action(detail=False, methods=["post"], url_path="egress", filter_backends=[], pagination_class=None)
    def egress_bulk(self, request: Request) -> Response:
        body = s.EgressBulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        items = body.validated_data["items"]
        # One query for the apps (someone else's or a missing one answers 404, as for the PUT).
        visible = {app.pk: app for app in selectors.app_list(user=request.user).filter(pk__in=[i["app"] for i in items])}
        changed: dict[int, bool] = {}
        errors: dict[int, Exception] = {pk: App.DoesNotExist() for pk in (i["app"] for i in items) if pk not in visible}
        enable = [visible[i["app"]] for i in items if i["type"] == EgressType.DEDICATED and i["app"] in visible]
        if enable:
            for pk, outcome in services.egress_enable_many(apps=enable, actor=request.user).items():
                if outcome.error is None:
                    changed[pk] = outcome.changed
                else:
                    errors[pk] = outcome.error
        for item in items:
            if item["type"] == EgressType.SHARED and item["app"] in visible:
                try:
                    changed[item["app"]] = services.egress_set(
                        app=visible[item["app"]], egress_type=item["type"], actor=request.user
                    )[1]
                except Exception as exc:  # answered below as the PUT would answer it (or re-raised)
                    errors[item["app"]] = exc
        fresh = {app.pk: app for app in selectors.app_list(user=request.user).filter(pk__in=list(changed))}
        results = [self._egress_bulk_result(request, i["app"], fresh.get(i["app"]), changed, errors) for i in items]
        return Response(s.EgressBulkResponseSerializer({"results": results}).data)

    def _egress_bulk_result(
        self, request: Request, pk: int, app: App | None, changed: dict[int, bool], errors: dict[int, Exception]
    ) -> dict[str, Any]:
        if pk in errors or app is None:
            exc = errors.get(pk) or App.DoesNotExist()
            response = api_exception_handler(exc, {"view": self, "request": request})
            if response is None:  # not an answer the single-app PUT gives: a bug
                raise exc
            return {"app": pk, "status": response.status_code, "egress": None, "error": response.data["error"]}
        code = status.HTTP_202_ACCEPTED if changed[pk] and app.is_pending else status.HTTP_200_OK
        return {"app": pk, "status": code, "egress": selectors.egress_summary(app), "error": None}

    @extend_schema(summary="An app's event timeline, newest first", responses={200: s.EventSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="events", filter_backends=[])
    def events(self, request: Request, pk: str | None = None) -> Response:
        app = self.get_object()
        page = self.paginate_queryset(selectors.app_events(app=app))
        return self.get_paginated_response(s.EventSerializer(page, many=True, context=self.get_serializer_context()).data)


# API tokens -----------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List your API tokens (never the tokens themselves)"),
    retrieve=extend_schema(summary="Get one of your API tokens"),
    destroy=extend_schema(summary="Revoke one of your API tokens", description="It stops working at once."),
)
class ApiTokenViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                      viewsets.GenericViewSet):
    """Your tokens: list and revoke. Tokens are made in the portal (API tokens page), where the token is
    shown once; a token cannot make more tokens, so a leaked one cannot outlive its own revocation."""

    serializer_class = s.ApiTokenSerializer
    filter_backends = [WhitelistOrderingFilter]
    ordering_fields = {"created": "created", "expiry": "expiry", "name": "name"}

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return token_selectors.api_token_list(user=self.request.user).order_by("-created", "-id")

    def get_object(self) -> ApiToken:
        try:
            return token_selectors.api_token_get(user=self.request.user, pk=self.kwargs["pk"])
        except (ApiToken.DoesNotExist, ValueError):
            raise NotFound() from None

    def perform_destroy(self, instance: ApiToken) -> None:
        token_services.api_token_revoke(token=instance, actor=self.request.user)


# Staff: regions, pools, gateways, nodes -------------------------------------------------------------------------


class StaffViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Platform administration: staff with the model permission each request needs (as in the admin)."""

    permission_classes = [StaffModelPermission]
    search_fields = ["name"]

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "request": self.request}


@extend_schema_view(destroy=extend_schema(responses={204: None, 409: CONFLICT}))
class RegionViewSet(StaffViewSet):
    """Regions (staff only). A region can be deleted only when nothing refers to it (409 otherwise)."""

    serializer_class = s.RegionSerializer
    queryset = Region.objects.all()
    lookup_field = "slug"
    search_fields = ["slug", "name"]
    ordering_fields = {"slug": "slug", "name": "name", "created_at": "created_at"}

    def perform_destroy(self, instance: Region) -> None:
        services.region_delete(region=instance, actor=self.request.user)


@extend_schema_view(destroy=extend_schema(responses={204: None, 409: CONFLICT}))
class PoolViewSet(StaffViewSet):
    """IP pools (staff only). The CIDR is fixed at creation; a pool can be deleted only when none of its
    addresses is assigned or in quarantine (409 otherwise)."""

    serializer_class = s.PoolSerializer
    filterset_class = PoolFilterSet
    # By CIDR: IPv4 pools before IPv6 ones, each by its first address (an IPv6 pool's first_int is NULL, and
    # NULLs sort first on SQLite but last on PostgreSQL; its first_hex key sorts like the number it stands for).
    ordering_fields = {
        "name": "name",
        "cidr": ("family", "first_int", "first_hex"),
        "region": "region__slug",
        "created_at": "created_at",
    }

    def get_queryset(self) -> Any:
        return selectors.pool_list()

    def perform_create(self, serializer: Any) -> None:
        serializer.save()
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    def perform_update(self, serializer: Any) -> None:
        serializer.save()
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    def perform_destroy(self, instance: Any) -> None:
        services.pool_delete(pool=instance, actor=self.request.user)


class _HostViewSet(StaffViewSet):
    # Actions that change the host need its change permission (a POST would otherwise ask for "add").
    permission_actions = {"accept_host_key": "change", "drain": "change", "undrain": "change"}
    ordering_fields = {"name": "name", "region": "region__slug", "health": "health", "created_at": "created_at"}

    def perform_destroy(self, instance: Gateway | Node) -> None:
        services.host_delete(host=instance, actor=self.request.user)

    @extend_schema(
        summary="Pin the host key the host presented after a mismatch",
        description="An audited staff decision: the key in presented_host_key becomes the pinned host_key. "
        "400 when the host has not presented a different key.",
        request=None,
    )
    @action(detail=True, methods=["post"], url_path="accept-host-key", filter_backends=[])
    def accept_host_key(self, request: Request, pk: str | None = None) -> Response:
        host = services.host_accept_presented_key(host=self.get_object(), actor=request.user)
        return Response(self.get_serializer(host).data)


@extend_schema_view(destroy=extend_schema(responses={204: None, 409: CONFLICT}))
class GatewayViewSet(_HostViewSet):
    """Gateways (staff only). Health fields are written by the workers; the slot is chosen automatically.
    A gateway holding egress addresses cannot be deleted (409): drain it first."""

    serializer_class = s.GatewaySerializer
    queryset = Gateway.objects.select_related("region")
    filterset_class = host_filterset(Gateway)
    ordering_fields = {**_HostViewSet.ordering_fields, "slot": "slot"}

    @extend_schema(
        summary="Drain the gateway for maintenance",
        description="Moves every active role to the app's standby (already in the user's allow-list), then, "
        "with rehome (default true), moves each app's address on this gateway to another gateway that holds "
        "none of the app's addresses, keeping the same address. Where no gateway can take it, the address is "
        "withdrawn but stays reserved for its app and comes back on undrain. Answers 202: the work is done by "
        "the workers.",
        request=s.DrainSerializer,
        responses={202: s.GatewaySerializer},
    )
    @action(detail=True, methods=["post"], url_path="drain", filter_backends=[])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        body = s.DrainSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        gateway = self.get_object()
        services.gateway_drain(gateway=gateway, rehome=body.validated_data["rehome"], actor=request.user)
        gateway.refresh_from_db()
        return Response(self.get_serializer(gateway).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Put a drained gateway back into service",
        description="New allocations may use it again, and apps that lost an address while it was drained get "
        "the very same address back.",
        request=None,
        responses={202: s.GatewaySerializer},
    )
    @action(detail=True, methods=["post"], url_path="undrain", filter_backends=[])
    def undrain(self, request: Request, pk: str | None = None) -> Response:
        gateway = self.get_object()
        services.gateway_undrain(gateway=gateway, actor=request.user)
        gateway.refresh_from_db()
        return Response(self.get_serializer(gateway).data, status=status.HTTP_202_ACCEPTED)


class NodeViewSet(_HostViewSet):
    """Cluster nodes (staff; the platform may read them). Health fields are written by the workers."""

    serializer_class = s.NodeSerializer
    queryset = Node.objects.select_related("region")
    filterset_class = host_filterset(Node)
    permission_classes = [StaffOrPlatformReadOnly]

    @extend_schema(
        methods=["GET"],
        summary="A node's placements (the platform and staff)",
        description="Which addresses on this node are which app's, as last reported.",
        request=None,
        responses={200: s.NodePlacementsSerializer},
    )
    @extend_schema(
        methods=["PUT"],
        summary="Report a node's complete set of placements (the platform and staff)",
        description="The complete set for this node: what is absent is removed. Idempotent and all or nothing: "
        "200 with the stored set. Refused, changing nothing: an address outside the node's pod CIDRs, wider than "
        "/24 (so never 0.0.0.0/0), malformed, an unknown app or one of another region, or more addresses than "
        "EGRESS_MAX_PLACEMENTS_PER_NODE (400, naming the entry in 'fields'); an address placed for another app "
        "of the region (409, code placement_conflict, naming the entry, never the other app). Tenants get 403. "
        "Only what changed is reconciled: this node and the gateways of dedicated apps whose placements changed.",
        request=s.NodePlacementsSerializer,
        responses={200: s.NodePlacementsSerializer, 409: CONFLICT},
    )
    @action(
        detail=True,
        methods=["get", "put"],
        url_path="placements",
        filter_backends=[],
        pagination_class=None,
        permission_classes=[PlacementsPermission],
    )
    def placements(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        if request.method == "PUT":
            if not isinstance(request.data, dict) or "placements" not in request.data:
                raise ValidationError({"placements": ['Send {"placements": [{"app": <id>, "addresses": [...]}, ...]}.']})
            services.node_placements_set(node=node, placements=request.data["placements"], actor=request.user)
        return Response({"node": node.pk, "placements": selectors.node_placements(node)})


# Addresses ------------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="Every dedicated egress address of your apps (staff: all apps)",
        description="For firewall allow-lists: the addresses carrying traffic, the standbys traffic fails over to, "
        "and the addresses reserved for an app (withdrawn during a gateway drain, or released when it went back "
        "to shared egress) with the time until which no other tenant gets them.",
    )
)
class AddressViewSet(ApiViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.AddressSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        return selectors.address_rows_for(self.request.user)


# Staff: the audit log -------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="The audit log (staff only), newest first",
        description="Every change with its actor, time and before/after. Filter by kind (a trailing '.' "
        "matches a family), actor, app, gateway, node, level and a time range (since inclusive, until exclusive).",
    )
)
class AuditViewSet(ApiViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Read-only: events are append-only, so there is nothing to change here."""

    permission_classes = [StaffModelPermission]
    permission_model = Event
    serializer_class = s.AuditEventSerializer
    filterset_class = AuditFilterSet
    filter_backends = [DjangoFilterBackend, WhitelistOrderingFilter]
    ordering_fields = {"created_at": "created_at", "kind": "kind", "id": "id"}

    def get_queryset(self) -> Any:
        return Event.objects.select_related("gateway", "node").order_by("-created_at", "-id")
