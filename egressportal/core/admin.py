"""The admin site for platform admins: pools with utilization, hosts with
health, apps with their addresses, and the read-only event log. Writes that
carry business rules go through the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from . import secrets, selectors, services
from .audit import audit_csv_response, audit_json_response
from .errors import DomainError
from .models import App, EgressIP, Event, Gateway, IPPool, Node, Placement, Region, TenantQuota
from .services.hosts import HOST_FIELDS, KIND_FIELDS, host_credential_set, host_editable_fields
from .validators import validate_ipv6_address
from .wording import duration_words, status_label


def _report(request: HttpRequest, exc: Exception) -> None:
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()) if hasattr(
            exc, "error_dict"
        ) else " ".join(exc.messages)
    else:
        text = str(exc)
    messages.error(request, text)


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["slug"] if obj is not None else []

    # Through the services, so every change lands in the audit log with its actor.
    def save_model(self, request: HttpRequest, obj: Region, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.region_update(
                region=Region.objects.get(pk=obj.pk), name=data.get("name") or None,
                description=data.get("description"), actor=request.user,
            )
        else:
            obj.pk = services.region_create(
                slug=data["slug"], name=data.get("name", ""), description=data.get("description", ""),
                actor=request.user,
            ).pk

    def delete_model(self, request: HttpRequest, obj: Region) -> None:
        services.region_delete(region=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Region]) -> None:
        for region in queryset:
            services.region_delete(region=region, actor=request.user)


class IPPoolForm(forms.ModelForm):
    excluded_text = forms.CharField(
        label="Excluded addresses",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One address per line (or comma-separated); never handed out.",
    )

    class Meta:
        model = IPPool
        fields = ["region", "name", "cidr", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["excluded_text"].initial = "\n".join(self.instance.excluded)
            self.fields["cidr"].disabled = True
            self.fields["cidr"].help_text = "A pool keeps its CIDR for life: its addresses may be allow-listed."
            self.fields["region"].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        raw = data.get("excluded_text") or ""
        data["excluded"] = [a for a in raw.replace(",", " ").split() if a]
        return data

    def _post_clean(self) -> None:
        # Model validation happens in the service (overlap, exclusions).
        pass


@admin.register(IPPool)
class IPPoolAdmin(admin.ModelAdmin):
    form = IPPoolForm
    list_display = ["name", "cidr", "family", "region", "size", "assigned", "quarantined", "free", "utilization"]
    list_filter = ["region", "family"]
    search_fields = ["name", "cidr"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[IPPool]:
        return selectors.pool_list()

    @admin.display(description="size")
    def size(self, obj: IPPool) -> int:
        return obj.size

    @admin.display(description="assigned", ordering="n_assigned")
    def assigned(self, obj: IPPool) -> int:
        return obj.n_assigned

    @admin.display(description="quarantined", ordering="n_quarantined")
    def quarantined(self, obj: IPPool) -> int:
        return obj.n_quarantined

    @admin.display(description="free")
    def free(self, obj: IPPool) -> int:
        return selectors.pool_utilization(obj).free

    @admin.display(description="used")
    def utilization(self, obj: IPPool) -> str:
        pct = selectors.pool_utilization(obj).percent_used
        level = "high" if pct >= 90 else "medium" if pct >= 70 else "low"
        return format_html(
            '<meter min="0" max="100" low="70" high="90" optimum="0" value="{}" title="{}%"></meter> '
            '<span class="util-{}">{}%</span>',
            f"{pct:.0f}",
            f"{pct:.0f}",
            level,
            f"{pct:.0f}",
        )

    def save_model(self, request: HttpRequest, obj: IPPool, form: IPPoolForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            saved = services.pool_update(
                pool=obj, excluded=data["excluded"], description=data.get("description", ""), actor=request.user
            )
        else:
            saved = services.pool_create(
                region=data["region"],
                name=data["name"],
                cidr=data["cidr"],
                excluded=data["excluded"],
                description=data.get("description", ""),
                actor=request.user,
            )
            obj.pk = saved.pk
        # An IPv6 pool gives the region's enabled apps their IPv6 addresses (services.egress6_backfill): say
        # how many, and which apps stay IPv4-only when the pool ran out.
        backfill = getattr(saved, "backfill6", None)
        if backfill is not None and (backfill.apps or backfill.left or backfill.failed):
            level = messages.WARNING if backfill.left or backfill.failed else messages.INFO
            messages.add_message(request, level, backfill.message)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except (ValidationError, DomainError) as exc:
            _report(request, exc)
            return HttpResponseRedirect(request.get_full_path())

    def delete_model(self, request: HttpRequest, obj: IPPool) -> None:
        services.pool_delete(pool=obj, actor=request.user)


def _health_badge(obj: Any) -> str:
    # Classes, not style attributes: the Content-Security-Policy allows no inline styles.
    level = obj.health if obj.health in ("healthy", "unhealthy") else "unknown"
    mismatch = mark_safe(' <strong class="host-key-mismatch">⚠ host key mismatch</strong>') if (
        obj.host_key_mismatch_at
    ) else ""
    return format_html(
        '<span class="egress-health egress-health--{}">{}</span>{}', level, obj.get_health_display(), mismatch
    )


class _NeverRenderedTextarea(forms.Textarea):
    """A secret goes in, never back out: not even a re-rendered form after a validation error shows it."""

    def format_value(self, value: Any) -> None:
        return None


class StrictIPv6FormField(forms.GenericIPAddressField):
    """An IPv6 address checked as typed. Django's own field parses with ``ipaddress``, which accepts a zone
    index ("2001:db8::1%eth0") and drops it, so the model's validators would pass what the services and
    the API refuse; here the rule they share (``validators.validate_ipv6_address``) sees the text first."""

    def to_python(self, value: Any) -> str:
        text = value.strip() if isinstance(value, str) else value
        if text:
            validate_ipv6_address(text)
        return super().to_python(value)


class HostAdminForm(forms.ModelForm):
    ssh_private_key = forms.CharField(
        label="New SSH private key",
        required=False,
        strip=False,
        widget=_NeverRenderedTextarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
        help_text="Optional: a key for this host only (OpenSSH or PEM, no passphrase), stored encrypted. "
        "Leave empty to keep the current one. It is never shown again.",
    )
    clear_ssh_private_key = forms.BooleanField(
        label="Remove this host's own key", required=False, help_text="Use the workers' default key again."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields.get("transit_address6")
        if field is not None and not field.disabled:
            self.fields["transit_address6"] = StrictIPv6FormField(
                protocol="IPv6", required=False, label=field.label, help_text=field.help_text
            )

    def clean_ssh_private_key(self) -> str:
        value = self.cleaned_data.get("ssh_private_key") or ""
        if value.strip():
            try:
                secrets.private_key_check(value)
            except (ValueError, secrets.SecretsError) as exc:
                raise ValidationError(str(exc)) from None
        return value if value.strip() else ""


# Every action that changes something asks for the model's change permission (permissions=["change"]):
# without it Django offers an action to whoever may merely view the list, and a view-only staff account
# could drain gateways or accept host keys. The API asks the same (egressportal/api/permissions.py).


class HostAdminMixin:
    form = HostAdminForm

    class Media:
        css = {"all": ["portal/admin.css"]}

    list_filter = ["region", "health", "enabled"]
    search_fields = ["name", "mgmt_address", "transit_address", "transit_address6"]
    readonly_fields = [
        "ssh_credential",
        "health",
        "health_message",
        "health_checked_at",
        "health_changed_at",
        "last_seen_at",
        "health_failures",
        "health_successes",
        "host_key_mismatch_at",
        "presented_host_key",
        "last_reconciled_at",
        "reconcile_duration",
        "last_reconcile_error",
        "reconcile_failures",
        "reconcile_count",
        "reconcile_queued_at",
        "reconcile_retry_at",
        "lease_token",
        "lease_expires_at",
        "created_at",
        "updated_at",
    ]
    actions = ["resync", "accept_presented_key"]

    @admin.display(description="last reconcile duration")
    def reconcile_duration(self, obj: Any) -> str:
        seconds = obj.last_reconcile_duration if obj else None
        return duration_words(seconds) if seconds is not None else "–"

    @admin.display(description="own SSH key")
    def ssh_credential(self, obj: Any) -> str:
        # Only whether it is set: the key, its ciphertext and its length are never shown.
        return "set" if obj and obj.has_ssh_private_key else "not set (workers' default key)"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        identity = (["name", "region", "slot"] if isinstance(obj, Gateway) else ["name", "region"]) if obj else []
        return [*identity, *self.readonly_fields]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["last_reconcile_duration"]  # shown in words (reconcile_duration)

    # Writes go through the services: validation, reconcile requests and the audit log in one place.
    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        model = type(obj)
        if change:
            original = model.objects.get(pk=obj.pk)
            editable = host_editable_fields(model.kind)
            fields = {f: data[f] for f in form.changed_data if f in editable}
            host = services.host_update(host=original, actor=request.user, **fields) if fields else original
            if data.get("ssh_private_key"):
                host_credential_set(host=host, private_key=data["ssh_private_key"], actor=request.user)
            elif data.get("clear_ssh_private_key"):
                host_credential_set(host=host, private_key="", actor=request.user)
        else:
            fields = {f: data[f] for f in (*HOST_FIELDS, *KIND_FIELDS[model.kind]) if f in data}
            if "pod_cidrs" in fields:
                fields["pod_cidrs"] = fields["pod_cidrs"] or []
            host = services.host_create(
                kind=model.kind, ssh_private_key=data.get("ssh_private_key") or "", actor=request.user, **fields
            )
            obj.pk = host.pk

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.host_delete(host=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for host in queryset:
            services.host_delete(host=host, actor=request.user)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except (ValidationError, DomainError) as exc:
            _report(request, exc)
            return HttpResponseRedirect(request.get_full_path())

    @admin.display(description="health")
    def health_badge(self, obj: Any) -> str:
        return _health_badge(obj)

    @admin.action(description="Re-sync selected hosts now", permissions=["change"])
    def resync(self, request: HttpRequest, queryset: QuerySet) -> None:
        kind = queryset.model.kind
        sent = services.reconcile_dispatch([(kind, pk) for pk in queryset.values_list("pk", flat=True)], force=True)
        count = queryset.count()
        messages.info(request, f"Re-sync requested for {count} host{pluralize(count)} ({sent} queued now, "
                               "the others already had a reconcile waiting).")

    @admin.action(description="Accept the host key each selected host presented (audited)", permissions=["change"])
    def accept_presented_key(self, request: HttpRequest, queryset: QuerySet) -> None:
        for host in queryset:
            try:
                services.host_accept_presented_key(host=host, actor=request.user)
                messages.success(request, f"{host.name}: new host key pinned.")
            except ValidationError as exc:
                messages.error(request, f"{host.name}: {' '.join(exc.messages)}")


@admin.register(Gateway)
class GatewayAdmin(HostAdminMixin, admin.ModelAdmin):
    list_display = [
        "name", "region", "mgmt_address", "public_interface", "slot", "health_badge", "service_state",
        "enabled", "last_reconciled_at",
    ]
    list_filter = ["region", "health", "enabled", "draining"]
    actions = [*HostAdminMixin.actions, "drain", "drain_active_only", "undrain"]

    @admin.display(description="service", ordering="draining")
    def service_state(self, obj: Gateway) -> str:
        # Words, not the boolean icons: a green tick for "draining" read as "all good".
        if obj.draining:
            return mark_safe('<span class="egress-health egress-health--draining">Draining</span>')
        return mark_safe('<span class="egress-health egress-health--in-service">In service</span>')

    def _confirm_drain(self, request: HttpRequest, queryset: QuerySet[Gateway], *, rehome: bool, action: str) -> Any:
        """Drain changes where many apps' traffic leaves from: show who is affected and ask first."""
        if request.POST.get("confirm") == "yes":
            for gateway in queryset:
                result = services.gateway_drain(gateway=gateway, rehome=rehome, actor=request.user)
                moved = result.moved_active
                text = (f"{gateway.name}: draining. {moved} app{pluralize(moved)} moved to "
                        f"{pluralize(moved, 'its,their')} standby address")
                if result.kept_active:
                    text += f"; kept on it for lack of a healthy alternative: {', '.join(result.kept_active)}"
                messages.info(request, text + ".")
            return None
        gateways = [{"gateway": g, "apps": selectors.gateway_affected_apps(g)} for g in queryset]
        return TemplateResponse(
            request,
            "admin/core/gateway/drain_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": "Drain gateways?",
                "gateways": gateways,
                "rehome": rehome,
                "action": action,
                "queryset": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(
        description="Drain: move every app off (addresses keep their apps; no allow-list changes)", permissions=["change"]
    )
    def drain(self, request: HttpRequest, queryset: QuerySet[Gateway]) -> Any:
        return self._confirm_drain(request, queryset, rehome=True, action="drain")

    @admin.action(description="Drain active roles only (addresses stay as standby)", permissions=["change"])
    def drain_active_only(self, request: HttpRequest, queryset: QuerySet[Gateway]) -> Any:
        return self._confirm_drain(request, queryset, rehome=False, action="drain_active_only")

    @admin.action(description="Undrain: back into service, give apps their addresses back", permissions=["change"])
    def undrain(self, request: HttpRequest, queryset: QuerySet[Gateway]) -> None:
        for gateway in queryset:
            topped = services.gateway_undrain(gateway=gateway, actor=request.user)
            messages.info(request, f"{gateway.name}: back in service; {topped} app{pluralize(topped)} "
                                   f"regain{pluralize(topped, 's,')} redundancy.")


class _ReportedPlacementInline(admin.TabularInline):
    """Placements as the platform reported them: read-only for everyone here (they change only through
    the platform's report, PUT /api/v1/nodes/{id}/placements/)."""

    model = Placement
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NodePlacementInline(_ReportedPlacementInline):
    fk_name = "node"
    fields = ["app", "cidr", "created_at"]
    readonly_fields = fields
    verbose_name_plural = "placements (reported by the platform; read-only)"


@admin.register(Node)
class NodeAdmin(HostAdminMixin, admin.ModelAdmin):
    list_display = ["name", "region", "mgmt_address", "transit_address", "health_badge", "enabled", "last_reconciled_at"]
    inlines = [NodePlacementInline]


class AppPlacementInline(_ReportedPlacementInline):
    fk_name = "app"
    fields = ["node", "cidr", "created_at"]
    readonly_fields = fields
    verbose_name_plural = "where it runs (placements reported by the platform; read-only)"


class EgressIPInline(admin.TabularInline):
    model = EgressIP
    fk_name = "app"
    extra = 0
    can_delete = False
    fields = ["address", "address6", "gateway", "role", "status", "programmed", "assigned_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "region", "egress_type", "egress_state", "addresses", "egress_updated_at"]
    list_filter = ["region", "egress_type", "egress_status"]
    search_fields = ["name", "owner__username", "placements__cidr", "egress_ips__address", "egress_ips__address6"]
    list_select_related = ["owner", "region"]
    inlines = [AppPlacementInline, EgressIPInline]
    readonly_fields = [
        "owner", "region", "egress_type", "egress_status", "egress_message", "waiting_for", "egress_updated_at",
        "egress_requested_at", "egress_generation", "delete_requested", "created_at", "updated_at",
    ]
    fields = ["name", *readonly_fields]
    actions = ["enable_dedicated", "disable_dedicated"]

    @admin.display(description="waiting for (staff detail)")
    def waiting_for(self, obj: App) -> str:
        """The hosts that still owe this app a reconcile, with their last error in full: the owner's message
        above says it in their words, without management addresses or tool output."""
        hosts = selectors.app_waiting_hosts(app=obj)
        if not hosts:
            return "nothing"
        return "\n".join(f"{host.kind} {host.name}: {host.last_reconcile_error or 'queued'}" for host in hosts)

    def get_queryset(self, request: HttpRequest) -> QuerySet[App]:
        return super().get_queryset(request).prefetch_related("egress_ips").distinct()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # apps are created by their owners (portal/API) or the platform

    @admin.display(description="egress status", ordering="egress_status")
    def egress_state(self, obj: App) -> str:
        return status_label(obj.egress_status)

    @admin.display(description="egress IPs")
    def addresses(self, obj: App) -> str:
        return ", ".join(f"{ip.address} ({ip.role})" for ip in obj.egress_ips.all() if ip.app_id)

    def save_model(self, request: HttpRequest, obj: App, form: Any, change: bool) -> None:
        services.app_update(app=obj, name=obj.name, actor=request.user)

    @admin.action(description="Enable dedicated egress", permissions=["change"])
    def enable_dedicated(self, request: HttpRequest, queryset: QuerySet[App]) -> None:
        self._toggle(request, queryset, "dedicated")

    @admin.action(description="Disable dedicated egress (back to shared)", permissions=["change"])
    def disable_dedicated(self, request: HttpRequest, queryset: QuerySet[App]) -> None:
        self._toggle(request, queryset, "shared")

    def _toggle(self, request: HttpRequest, queryset: QuerySet[App], egress_type: str) -> None:
        changed = 0
        for app in queryset:
            try:
                _, did = services.egress_set(app=app, egress_type=egress_type, actor=request.user)
                changed += did
            except (ValidationError, DomainError) as exc:
                messages.error(request, f"{app.name}: {getattr(exc, 'message', exc)}")
        messages.info(request, f"{changed} app{pluralize(changed)} changed.")


@admin.register(TenantQuota)
class TenantQuotaAdmin(admin.ModelAdmin):
    """Per-user overrides of the default quotas; empty fields mean the default."""

    list_display = ["user", "max_apps", "max_addresses", "usage", "updated_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    autocomplete_fields: list[str] = []
    fields = ["user", "max_apps", "max_addresses"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["user"] if obj is not None else []

    @admin.display(description="in use (apps / addresses)")
    def usage(self, obj: TenantQuota) -> str:
        quota = services.quota_usage(obj.user_id)
        return f"{quota.apps}/{quota.max_apps} apps, {quota.addresses}/{quota.max_addresses} addresses"

    # Through the service: validated and audited with the actor.
    def save_model(self, request: HttpRequest, obj: TenantQuota, form: Any, change: bool) -> None:
        data = form.cleaned_data
        user = obj.user if change else data["user"]
        saved = services.tenant_quota_set(
            user=user, max_apps=data.get("max_apps"), max_addresses=data.get("max_addresses"), actor=request.user
        )
        obj.pk = saved.pk if saved else obj.pk

    def delete_model(self, request: HttpRequest, obj: TenantQuota) -> None:
        services.tenant_quota_set(user=obj.user, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TenantQuota]) -> None:
        for quota in queryset.select_related("user"):
            services.tenant_quota_set(user=quota.user, actor=request.user)


@admin.register(EgressIP)
class EgressIPAdmin(admin.ModelAdmin):
    list_display = [
        "address", "address6", "pool", "status", "app", "gateway", "role", "programmed", "released_at", "last_owner"
    ]
    list_filter = ["status", "role", "programmed", "pool", "gateway"]
    search_fields = ["address", "address6", "app__name", "last_owner__username"]
    list_select_related = ["pool", "app", "gateway", "last_owner"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # allocation goes through the services

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["when", "level", "kind", "actor_name", "subject", "message"]
    list_filter = ["level", "kind", "actor_name", "created_at"]
    search_fields = ["message", "subject", "actor_name", "kind"]
    date_hierarchy = "created_at"
    actions = ["export_selected_csv", "export_selected_json"]
    # The change list links to the export views with its own filters (templates/admin/core/event/).
    change_list_template = "admin/core/event/change_list.html"

    @admin.display(description="time (UTC)", ordering="created_at")
    def when(self, obj: Event) -> str:
        # To the second: an audit trail read next to logs needs more than the minute.
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S")

    def get_urls(self) -> list[URLPattern]:
        export = [
            path("export.csv", self.admin_site.admin_view(self.export_view), {"fmt": "csv"}, name="core_event_export_csv"),
            path("export.json", self.admin_site.admin_view(self.export_view), {"fmt": "json"},
                 name="core_event_export_json"),
        ]
        return export + super().get_urls()

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponse:
        """The change list as it is filtered (same query string: filters, search, date drill-down), streamed."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        queryset = self.get_changelist_instance(request).get_queryset(request)
        return audit_csv_response(queryset) if fmt == "csv" else audit_json_response(queryset)

    @admin.action(description="Export selected events as CSV")
    def export_selected_csv(self, request: HttpRequest, queryset: QuerySet[Event]) -> HttpResponse:
        return audit_csv_response(queryset)

    @admin.action(description="Export selected events as JSON")
    def export_selected_json(self, request: HttpRequest, queryset: QuerySet[Event]) -> HttpResponse:
        return audit_json_response(queryset)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
