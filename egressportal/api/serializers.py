"""Serializers: validate input shapes and turn rows into JSON. Writes go
through egressportal.core.services; domain rules live there, not here."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from egressportal.core import ipam6, limits, roles, secrets, selectors, services
from egressportal.core.models import (
    App,
    EgressIPRole,
    EgressStatus,
    EgressType,
    Event,
    EventLevel,
    Gateway,
    IPPool,
    Node,
    Region,
)
from egressportal.core.selectors import ADDRESS_STATES
from egressportal.core.services.hosts import HOST_FIELDS, KIND_FIELDS, host_credential_set, host_editable_fields
from egressportal.core.validators import normalize_cidr_list, validate_app_name, validate_ipv6_address
from egressportal.tokens.models import ApiToken

from .schema import ErrorDetailSerializer

__all__ = [
    "EGRESS",
    "ApiTokenSerializer",
    "AppSerializer",
    "AuditEventSerializer",
    "EgressRequestSerializer",
    "EgressSerializer",
    "EventSerializer",
    "GatewaySerializer",
    "NodePlacementsSerializer",
    "NodeSerializer",
    "PoolSerializer",
    "RegionSerializer",
]


def _actor(serializer: serializers.Serializer) -> Any:
    request = serializer.context.get("request")
    return getattr(request, "user", None)


def _cidr_list(value: list[str], *, what: str) -> list[str]:
    try:
        return normalize_cidr_list(value, what=what)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(list(exc.messages)) from None


def _refuse_changes(instance: Any, data: dict[str, Any], fields: dict[str, str]) -> None:
    """Fields that are an object's identity: accepted when unchanged, refused otherwise."""
    errors = {}
    for field, why in fields.items():
        if field in data and data[field] != getattr(instance, field):
            errors[field] = [why]
    if errors:
        raise serializers.ValidationError(errors)


class RegionField(serializers.SlugRelatedField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Region.objects.all())
        kwargs.setdefault("help_text", "Region slug, e.g. 'ams3'.")
        super().__init__(slug_field="slug", **kwargs)
        self.error_messages["does_not_exist"] = "There is no region '{value}'."


# Egress ---------------------------------------------------------------------------------------------------------


class EgressIPSerializer(serializers.Serializer):
    address = serializers.IPAddressField(protocol="IPv4", read_only=True)
    address6 = serializers.IPAddressField(
        protocol="IPv6", read_only=True, allow_null=True,
        help_text="Its IPv6 partner: same gateway, same role. Null in a region without an IPv6 pool.",
    )
    gateway = serializers.CharField(read_only=True, allow_null=True, help_text="Name of the gateway holding it.")
    role = serializers.ChoiceField(choices=EgressIPRole.choices, read_only=True)
    status = serializers.ChoiceField(
        choices=[("live", "Live"), ("pending", "Pending")],
        read_only=True,
        help_text="live: configured on its gateway; pending: being configured.",
    )
    state = serializers.ChoiceField(
        choices=[(k, v) for k, v in selectors.ADDRESS_STATES.items() if k != "reserved"],
        read_only=True,
        help_text="in_use: carrying the app's traffic now; standby: ready for failover; gateway_down: its gateway "
        "is down; pending: being configured; releasing: going back to shared egress.",
    )


class EgressSerializer(serializers.Serializer):
    """The egress object of an app (built by selectors.egress_summary)."""

    type = serializers.ChoiceField(choices=EgressType.choices, read_only=True)
    status = serializers.ChoiceField(choices=EgressStatus.choices, read_only=True)
    ipv6_available = serializers.BooleanField(
        read_only=True,
        help_text="The app's region has an IPv6 pool: its dedicated addresses come with IPv6 ones. "
        "False: IPv4 only in this region.",
    )
    ips = EgressIPSerializer(many=True, read_only=True)
    message = serializers.CharField(read_only=True, allow_blank=True)
    updated_at = serializers.DateTimeField(read_only=True)


# One serializer for every egress object (read-only, so sharing it is safe): a new one per answer deep-copies
# its fields each time.
EGRESS = EgressSerializer()


class AddressSerializer(serializers.Serializer):
    """One dedicated egress address of an app (selectors.AddressRow): assigned to it now, or reserved for it."""

    address = serializers.IPAddressField(protocol="IPv4", read_only=True)
    address6 = serializers.IPAddressField(
        protocol="IPv6", read_only=True, allow_null=True, help_text="Its IPv6 partner, if the region has IPv6."
    )
    app = serializers.CharField(source="app_name", read_only=True, help_text="The app's name.")
    app_id = serializers.IntegerField(read_only=True, allow_null=True, help_text="Null when the app was deleted.")
    region = serializers.CharField(read_only=True)
    role = serializers.CharField(read_only=True, allow_blank=True, help_text="active, standby, or empty when reserved.")
    state = serializers.ChoiceField(
        choices=list(ADDRESS_STATES.items()), read_only=True,
        help_text="in_use: carrying the app's traffic; standby: ready for failover; gateway_down; pending: being "
        "configured; releasing; reserved: on no gateway, held for the app until reserved_until.",
    )
    gateway = serializers.CharField(read_only=True, allow_blank=True)
    reserved_until = serializers.DateTimeField(read_only=True, allow_null=True,
                                               help_text="Until when no other tenant gets it (reserved addresses only).")


class EgressRequestSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=EgressType.choices,
        help_text="dedicated: the app's traffic leaves from its own IPs; shared: from the node's IP.",
        error_messages={"invalid_choice": "'{input}' is not an egress type; use 'dedicated' or 'shared'."},
    )


class EgressBulkItemSerializer(serializers.Serializer):
    app = serializers.IntegerField(min_value=1, help_text="The app's id.")
    type = serializers.ChoiceField(
        choices=EgressType.choices,
        help_text="dedicated: the app's traffic leaves from its own IPs; shared: from the node's IP.",
        error_messages={"invalid_choice": "'{input}' is not an egress type; use 'dedicated' or 'shared'."},
    )


class EgressBulkSerializer(serializers.Serializer):
    items = serializers.ListField(
        child=EgressBulkItemSerializer(),
        allow_empty=False,
        max_length=limits.MAX_BULK_EGRESS_ITEMS,
        error_messages={"max_length": f"At most {limits.MAX_BULK_EGRESS_ITEMS} apps are accepted in one request."},
        help_text=f"At most {limits.MAX_BULK_EGRESS_ITEMS} apps, each at most once.",
    )

    def validate_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts = Counter(i["app"] for i in items)
        twice = sorted(app for app, n in counts.items() if n > 1)
        if twice:
            raise serializers.ValidationError(f"Each app at most once per request; repeated: {', '.join(map(str, twice))}.")
        return items


class EgressBulkResultSerializer(serializers.Serializer):
    app = serializers.IntegerField(read_only=True)
    status = serializers.IntegerField(
        read_only=True, help_text="What PUT /apps/{id}/egress/ would have answered for this app: 200, 202, 400, 404 or 409."
    )
    egress = EgressSerializer(read_only=True, allow_null=True, help_text="The egress object (200 and 202 only).")
    error = ErrorDetailSerializer(read_only=True, allow_null=True, help_text="Why this app was not changed (4xx only).")


class EgressBulkResponseSerializer(serializers.Serializer):
    results = EgressBulkResultSerializer(many=True, read_only=True, help_text="One per item, in the request's order.")


# Apps -----------------------------------------------------------------------------------------------------------


def _capped_list(limit: int, **kwargs: Any) -> dict[str, Any]:
    """ListField arguments that refuse more than ``limit`` entries with a message saying the cap."""
    messages = {"max_length": f"At most {limit} entries are accepted in one request."}
    return {"max_length": limit, "error_messages": messages, **kwargs}


class AppPlacementSerializer(serializers.Serializer):
    node = serializers.CharField(read_only=True, help_text="Name of the node.")
    addresses = serializers.ListField(child=serializers.CharField(), read_only=True)


def may_set_owner(user: Any) -> bool:
    """The platform and staff create apps for any owner (roles.acts_for_others)."""
    return roles.acts_for_others(user)


class OwnerField(serializers.SlugRelatedField):
    """An app's owner by username. Whoever may not set owners gets one answer for every name but their own,
    before any lookup, so the field never tells whether a user exists (and offers no list of users)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="username", queryset=get_user_model().objects.all(), **kwargs)
        self.error_messages["does_not_exist"] = "There is no user '{value}'."

    def to_internal_value(self, data: Any) -> Any:
        user = _actor(self)
        if not may_set_owner(user):
            if user is not None and isinstance(data, str) and data == user.get_username():
                return user
            raise serializers.ValidationError("Only the platform or staff can set the owner of an app; leave it out.")
        return super().to_internal_value(data)

    def get_choices(self, cutoff: int | None = None) -> dict:
        return {}  # never enumerate users (the browsable API and OPTIONS would render them)


class AppSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(
        max_length=63,
        validators=[validate_app_name],
        help_text="Lowercase letters, digits and '-'; unique per owner.",
    )
    region = RegionField(help_text="Region slug; cannot change after creation.")
    placements = serializers.SerializerMethodField(
        help_text="Where the app runs: its addresses per node, as the platform reports them. Read-only."
    )
    owner = OwnerField(
        required=False,
        help_text="Owner's username. Only the platform and staff may set it (at creation); it defaults to you.",
    )
    egress = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(EgressSerializer)
    def get_egress(self, app: App) -> dict[str, Any]:
        # One serializer for every app of a list: a new one per app deep-copies its fields each time
        # (half the time of a 50-app page went there). Read-only, so sharing it is safe.
        return EGRESS.to_representation(selectors.egress_summary(app))

    @extend_schema_field(AppPlacementSerializer(many=True))
    def get_placements(self, app: App) -> list[dict[str, Any]]:
        return selectors.app_placements(app)

    def to_internal_value(self, data: Any) -> Any:
        claimed = roles.source_address_fields_in(data) if isinstance(data, dict) else []
        if claimed:
            raise serializers.ValidationError({name: [roles.SOURCE_ADDRESS_REFUSAL] for name in claimed})
        return super().to_internal_value(data)

    def create(self, validated_data: dict[str, Any]) -> App:
        actor = _actor(self)
        return services.app_create(
            owner=validated_data.get("owner") or actor,
            region=validated_data["region"],
            name=validated_data["name"],
            actor=actor,
        )

    def update(self, instance: App, validated_data: dict[str, Any]) -> App:
        _refuse_changes(
            instance,
            validated_data,
            {
                "region": "An app's region cannot change; create a new app in the other region.",
                "owner": "An app's owner cannot change after creation.",
            },
        )
        return services.app_update(
            app=instance,
            name=validated_data.get("name"),
            actor=_actor(self),
        )


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField(
        help_text="Who: your user name, 'worker', 'system' or 'platform staff' (staff see every user name)."
    )
    gateway = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    node = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    level = serializers.ChoiceField(choices=EventLevel.choices, read_only=True)
    data = serializers.JSONField(read_only=True)

    class Meta:
        model = Event
        fields = ["id", "created_at", "kind", "level", "message", "actor", "gateway", "node", "data"]
        read_only_fields = fields

    def get_actor(self, event: Event) -> str:
        return selectors.event_actor_label(event, viewer=_actor(self))


class AuditEventSerializer(EventSerializer):
    """An audit-log entry: the timeline entry plus what it is about and who, when the user still exists."""

    app = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="App id, if any.")
    actor_id = serializers.IntegerField(read_only=True, allow_null=True, help_text="User id; null for worker/system.")

    class Meta(EventSerializer.Meta):
        fields = [*EventSerializer.Meta.fields, "actor_id", "app", "subject"]
        read_only_fields = fields


# API tokens -----------------------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    """One of your tokens. The token itself is shown only once, in the portal, when it is made."""

    current = serializers.SerializerMethodField(help_text="Whether this request is authenticated by this token.")

    class Meta:
        model = ApiToken
        fields = ["id", "name", "created", "expiry", "last_used_at", "current"]
        read_only_fields = fields

    def get_current(self, token: ApiToken) -> bool:
        request = self.context.get("request")
        return getattr(getattr(request, "auth", None), "pk", None) == token.pk


# Staff: regions and pools ---------------------------------------------------------------------------------------


class RegionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Region
        fields = ["slug", "name", "description", "created_at"]
        read_only_fields = ["created_at"]
        extra_kwargs = {
            "name": {"required": False, "allow_blank": True, "help_text": "Display name; defaults to the slug."},
            "description": {"required": False, "max_length": limits.MAX_DESCRIPTION_CHARS},
        }

    def create(self, validated_data: dict[str, Any]) -> Region:
        return services.region_create(
            slug=validated_data["slug"],
            name=validated_data.get("name", ""),
            description=validated_data.get("description", ""),
            actor=_actor(self),
        )

    def update(self, instance: Region, validated_data: dict[str, Any]) -> Region:
        _refuse_changes(instance, validated_data, {"slug": "A region's slug cannot change; other objects refer to it."})
        return services.region_update(
            region=instance,
            name=validated_data.get("name") or None,
            description=validated_data.get("description"),
            actor=_actor(self),
        )


class UtilizationSerializer(serializers.Serializer):
    size = serializers.IntegerField(help_text="Addresses the pool can hand out.")
    assigned = serializers.IntegerField()
    quarantined = serializers.IntegerField(help_text="Released recently; not handed to another tenant yet.")
    free = serializers.IntegerField()
    percent_used = serializers.FloatField()


class PoolSerializer(serializers.ModelSerializer):
    region = RegionField(help_text="Region slug; cannot change after creation.")
    excluded = serializers.ListField(
        **_capped_list(limits.MAX_EXCLUDED_ADDRESSES, child=serializers.CharField(max_length=64)),
        required=False,
        help_text="Addresses inside the CIDR that are never handed out.",
    )
    utilization = serializers.SerializerMethodField()

    class Meta:
        model = IPPool
        fields = ["id", "name", "region", "cidr", "family", "excluded", "description", "utilization", "created_at"]
        read_only_fields = ["id", "family", "created_at"]
        extra_kwargs = {
            "cidr": {
                "help_text": "IPv4 network (e.g. 203.0.113.0/28, at most a /16) or IPv6 network (e.g. "
                "2001:db8:0:2::/64, at most a /64); cannot change after creation."
            },
            "description": {"max_length": limits.MAX_DESCRIPTION_CHARS},
        }

    @extend_schema_field(UtilizationSerializer)
    def get_utilization(self, pool: IPPool) -> dict[str, Any]:
        u = selectors.pool_utilization(pool)
        return {
            "size": u.size,
            "assigned": u.assigned,
            "quarantined": u.quarantined,
            "free": u.free,
            "percent_used": round(u.percent_used, 2),
        }

    def create(self, validated_data: dict[str, Any]) -> IPPool:
        return services.pool_create(
            region=validated_data["region"],
            name=validated_data["name"],
            cidr=validated_data["cidr"],
            excluded=validated_data.get("excluded", []),
            description=validated_data.get("description", ""),
            actor=_actor(self),
        )

    def update(self, instance: IPPool, validated_data: dict[str, Any]) -> IPPool:
        if "cidr" in validated_data:
            try:
                same = str(instance.network) == str(ipam6.parse_network_any(validated_data["cidr"]))
            except ValueError:
                same = False
            if not same:
                raise serializers.ValidationError(
                    {"cidr": ["A pool's CIDR cannot change (its addresses may be allow-listed); create a new pool."]}
                )
        _refuse_changes(
            instance,
            validated_data,
            {
                "name": "A pool's name cannot change.",
                "region": "A pool's region cannot change; create a new pool in the other region.",
            },
        )
        return services.pool_update(
            pool=instance,
            excluded=validated_data.get("excluded"),
            description=validated_data.get("description"),
            actor=_actor(self),
        )


# Staff: gateways and nodes --------------------------------------------------------------------------------------

HEALTH_FIELDS = [
    "health",
    "health_message",
    "health_checked_at",
    "last_seen_at",
    "host_key_mismatch_at",
    "presented_host_key",
    "last_reconciled_at",
    "last_reconcile_error",
]


CREDENTIAL_FIELDS = ["ssh_private_key", "has_ssh_private_key"]


class StrictIPv6Field(serializers.IPAddressField):
    """An IPv6 address checked as typed: DRF's field (like Django's) drops a zone index ("%eth0") while
    parsing, so the rule the services apply (``validators.validate_ipv6_address``) sees the text first."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data.strip():
            try:
                validate_ipv6_address(data.strip())
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages) from None
        return super().to_internal_value(data)


class _HostSerializer(serializers.ModelSerializer):
    region = RegionField(help_text="Region slug; cannot change after creation.")
    transit_address6 = StrictIPv6Field(
        protocol="IPv6",
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text=str(Gateway._meta.get_field("transit_address6").help_text),
    )
    # Write-only: accepted, encrypted at rest, never returned (only has_ssh_private_key says it is there).
    ssh_private_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=16384,
        style={"input_type": "password"},
        help_text="Optional private key for this host only (OpenSSH or PEM text, no passphrase); "
        "'' removes it and the workers' default key is used. Write-only: never returned.",
    )
    has_ssh_private_key = serializers.BooleanField(read_only=True, help_text="Whether this host has its own SSH key.")

    class Meta:
        # Uniqueness across fields is checked by the services (full_clean), in one place.
        validators: list = []
        read_only_fields = ["id", *HEALTH_FIELDS, "created_at", "updated_at"]
        extra_kwargs = {"host_key": {"max_length": limits.MAX_HOST_KEY_CHARS}}

    def validate_ssh_private_key(self, value: str) -> str:
        if not value:
            return value
        try:
            secrets.private_key_check(value)
        except (ValueError, secrets.SecretsError) as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def create(self, validated_data: dict[str, Any]) -> Gateway | Node:
        return services.host_create(kind=self.Meta.model.kind, actor=_actor(self), **validated_data)

    def update(self, instance: Gateway | Node, validated_data: dict[str, Any]) -> Gateway | Node:
        _refuse_changes(
            instance,
            validated_data,
            {
                "name": "A host's name cannot change; add a new host instead.",
                "region": "A host's region cannot change; add a new host in the other region.",
            },
        )
        private_key = validated_data.pop("ssh_private_key", None)
        editable = host_editable_fields(instance.kind)
        fields = {k: v for k, v in validated_data.items() if k in editable}
        with transaction.atomic():
            host = services.host_update(host=instance, actor=_actor(self), **fields)
            if private_key is not None:
                host = host_credential_set(host=host, private_key=private_key, actor=_actor(self))
        return host


class DrainSerializer(serializers.Serializer):
    rehome = serializers.BooleanField(
        default=True, help_text="Also move the addresses off the gateway (keeping each address for its app)."
    )


class GatewaySerializer(_HostSerializer):
    class Meta(_HostSerializer.Meta):
        model = Gateway
        fields = ["id", *HOST_FIELDS, *KIND_FIELDS[Gateway.kind], *CREDENTIAL_FIELDS, *HEALTH_FIELDS, "created_at", "updated_at"]
        read_only_fields = [*_HostSerializer.Meta.read_only_fields, "slot"]



class NodeSerializer(_HostSerializer):
    pod_cidrs = serializers.ListField(
        **_capped_list(limits.MAX_POD_CIDRS, child=serializers.CharField(max_length=64)),
        required=False,
        help_text="The node's pod subnets (IPv4 CIDRs).",
    )

    class Meta(_HostSerializer.Meta):
        model = Node
        fields = ["id", *HOST_FIELDS, *KIND_FIELDS[Node.kind], *CREDENTIAL_FIELDS, *HEALTH_FIELDS, "created_at", "updated_at"]

    def validate_pod_cidrs(self, value: list[str]) -> list[str]:
        return _cidr_list(value, what="pod CIDR")


# The platform: placements -----------------------------------------------------------------------------------------


class PlacementEntrySerializer(serializers.Serializer):
    app = serializers.IntegerField(min_value=1, help_text="The app's id.")
    addresses = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        help_text="The app's instance addresses on this node: '198.18.64.17/32' (or a bare address) or a CIDR "
        "of at most /24, each inside one of the node's pod CIDRs.",
    )


class NodePlacementsSerializer(serializers.Serializer):
    """A node's complete set of placements. The service validates every entry (naming it in errors);
    this serializer only documents the shape."""

    node = serializers.IntegerField(read_only=True, help_text="The node's id.")
    placements = PlacementEntrySerializer(
        many=True,
        help_text="Every app instance address on this node; what is absent is removed. At most "
        "EGRESS_MAX_PLACEMENTS_PER_NODE addresses (default 5000).",
    )
