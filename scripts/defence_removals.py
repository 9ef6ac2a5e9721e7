"""Remove each security defence in turn and watch the test that guards it fail (docs/SECURITY.md's table).

Each removal runs on a throwaway copy of the working tree, so the tree itself never holds a weakened
defence. A removal whose text is not found exactly once is reported as STALE (the code moved: update this
table), never silently skipped. Prints one Markdown row per defence.

    .venv/bin/python scripts/defence_removals.py            # every row
    .venv/bin/python scripts/defence_removals.py token      # rows whose name contains "token"

The lab rows need root (network namespaces, sshd) like the lab tests themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ROOT / ".venv" / "bin" / "pytest"


@dataclass(frozen=True)
class Removal:
    name: str  # what is taken away, as the table says it
    path: str  # the file it lives in
    old: str  # the defence, exactly once in that file
    new: str  # what stands there without it
    tests: tuple[str, ...]  # the test(s) that must fail
    also: tuple[tuple[str, str, str], ...] = ()  # further (path, old, new) edits the removal needs


REMOVALS = [
    # Wave 1's defences, removed again
    Removal("CSP middleware removed", "egressportal/settings.py",
            '    "csp.middleware.CSPMiddleware",\n', "",
            ("tests/security/test_headers.py::test_portal_and_admin_pages_send_a_strict_policy_and_pass_it",)),
    Removal("axes backend removed", "egressportal/settings.py",
            '    "axes.backends.AxesStandaloneBackend",\n', "",
            ("tests/security/test_login_lockout.py::test_sixth_attempt_is_locked_out_even_with_the_right_password",)),
    Removal("quarantine ignored", "egressportal/core/capacity.py",
            "Q(status=EgressIPStatus.QUARANTINED, released_at__lt=quarantine_cutoff(now))",
            "Q(status=EgressIPStatus.QUARANTINED)",
            ("tests/test_domain.py::TestEgress::test_quarantine_returns_addresses_only_to_their_last_owner",)),
    Removal("tenant scoping removed", "egressportal/core/selectors.py",
            "        qs = qs.filter(owner=user)\n", "        pass\n",
            ("tests/api/test_apps.py::test_tenant_scoping",)),
    Removal("event message marked safe", "templates/portal/_event.html",
            "{{ event.message }}", "{{ event.message|safe }}",
            ("tests/security/test_xss.py::test_hostile_event_and_status_text_is_escaped_in_the_portal",)),
    Removal("interface-name check removed", "egressportal/dataplane/validate.py",
            '    if not _IFNAME_RE.fullmatch(name) or name in {".", ".."}:',
            "    if False:",
            ("tests/unit/test_dataplane.py::test_hostile_interface_names_rejected",)),
    Removal("admin secret widget renders the value", "egressportal/core/admin.py",
            "    def format_value(self, value: Any) -> None:\n        return None\n",
            "    pass\n",
            ("tests/security/test_secrets.py::test_admin_form_error_never_echoes_the_key",)),
    Removal("ciphertext exposed in the API", "egressportal/api/serializers.py",
            'CREDENTIAL_FIELDS = ["ssh_private_key", "has_ssh_private_key"]',
            'CREDENTIAL_FIELDS = ["ssh_private_key", "has_ssh_private_key", "ssh_private_key_encrypted"]',
            ("tests/security/test_secrets.py::test_api_accepts_the_key_encrypts_it_and_never_returns_it",)),
    Removal("rotation skips re-encryption", "egressportal/core/secrets.py",
            '        return fernet().rotate(ciphertext.encode("ascii")).decode("ascii")',
            "        return ciphertext",
            ("tests/security/test_secrets.py::test_rotate_secrets_re_encrypts_every_field_with_the_current_key",)),
    Removal("CSV formula defusing removed", "egressportal/core/audit.py",
            "    if isinstance(value, str) and value.startswith(_FORMULA_START):",
            "    if False:",
            ("tests/security/test_audit.py::test_csv_export_defuses_spreadsheet_formulas",)),
    Removal("app.deleted without before", "egressportal/core/services/apps.py",
            '                data={"before": before},\n            )\n            app.delete()',
            "            )\n            app.delete()",
            ("tests/security/test_audit.py::test_every_change_is_audited_with_actor_and_before_after",)),
    Removal("audit API open to every user", "egressportal/api/views.py",
            "    permission_classes = [StaffModelPermission]\n    permission_model = Event",
            "    permission_classes = [IsAuthenticated]\n    permission_model = Event",
            ("tests/security/test_audit.py::test_audit_api_is_staff_only",)),
    Removal("docs with an inline init script", "egressportal/api/urls.py",
            'csp_update({"style-src": ["\'unsafe-inline\'"]})(SpectacularSwaggerSplitView.as_view(url_name="api:schema"))',
            'csp_update({"style-src": ["\'unsafe-inline\'"], "script-src": ["\'unsafe-inline\'"]})'
            '(SpectacularSwaggerView.as_view(url_name="api:schema"))',
            ("tests/security/test_headers.py::test_api_docs_keep_strict_scripts_and_relax_only_styles",),
            also=(("egressportal/api/urls.py", "SpectacularSwaggerSplitView\n",
                   "SpectacularSwaggerSplitView, SpectacularSwaggerView\n"),)),
    Removal("host key not pinned (no pin loaded, AutoAddPolicy) [lab]", "workers/ssh.py",
            "        client.set_missing_host_key_policy(paramiko.RejectPolicy())",
            "        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())",
            ("tests/integration/test_ssh_real.py::test_wrong_pinned_key_never_runs_the_command",
             "tests/security/test_host_key_lab.py::test_changed_host_key_is_refused_alerted_and_accepted_by_staff_only"),
            # RejectPolicy alone is a second layer: with the pin loaded, paramiko itself refuses any other key
            # (the pin is a known host key), so only taking both away is noticed.
            also=(("workers/ssh.py",
                   "            client.get_host_keys().add(name, self._pinned.get_name(), self._pinned)",
                   "            pass"),)),
    Removal("per-host key ignored [lab]", "workers/reconcile.py",
            "    pkey = _host_pkey(host)\n", "    pkey = None\n",
            ("tests/security/test_host_key_lab.py::test_per_host_private_key_authenticates_against_real_sshd",)),
    # Staff API permissions
    Removal("staff API checks only is_staff (model permissions ignored)", "egressportal/api/permissions.py",
            "        if any(user.has_perms(perms) for perms in alternatives):",
            "        if True:",
            ("tests/api/test_permissions.py",)),
    Removal("host actions ask for 'add' like any POST", "egressportal/api/views.py",
            '    permission_actions = {"accept_host_key": "change", "drain": "change", "undrain": "change"}',
            "    permission_actions: dict = {}",
            ("tests/api/test_permissions.py::test_host_actions_need_the_change_permission",)),
    Removal("admin actions offered to view-only staff", "egressportal/core/admin.py",
            '    @admin.action(description="Accept the host key each selected host presented (audited)", '
            'permissions=["change"])',
            '    @admin.action(description="Accept the host key each selected host presented (audited)")',
            ("tests/api/test_permissions.py::test_admin_actions_that_change_things_need_the_change_permission",)),
    # JSON only, no enumeration
    Removal("browsable API rendered for everyone", "egressportal/api/views.py",
            "    renderer_classes = [JSONRenderer]",
            "    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]\n"
            "    from rest_framework.renderers import BrowsableAPIRenderer  # noqa",
            ("tests/security/test_enumeration.py::test_api_answers_json_only_even_to_a_browser",)),
    Removal("form and multipart bodies parsed and advertised", "egressportal/api/views.py",
            "    parser_classes = [ApiJSONParser]",
            "    from rest_framework.parsers import FormParser, MultiPartParser  # noqa\n"
            "    parser_classes = [ApiJSONParser, FormParser, MultiPartParser]",
            ("tests/security/test_enumeration.py::test_request_bodies_are_json_only",
             "tests/security/test_enumeration.py::test_schema_advertises_json_request_bodies_only",
             "tests/api/test_generated_client.py")),
    Removal("owner field looks the name up for tenants", "egressportal/api/serializers.py",
            "        if not may_set_owner(user):",
            "        if False:",
            ("tests/security/test_enumeration.py::test_owner_field_never_tells_existing_users_from_unknown_ones",)),
    Removal("timeline shows every actor's user name", "egressportal/core/selectors.py",
            '    if getattr(viewer, "is_staff", False):\n        return event.actor_name',
            "    return event.actor_name",
            ("tests/security/test_enumeration.py::test_timeline_names_other_people_platform_staff",)),
    # Limits
    Removal("oversized body not answered in the API's shape (Django's 400 page)", "egressportal/api/exceptions.py",
            "    if isinstance(exc, RequestDataTooBig):",
            "    if False:",
            ("tests/security/test_limits.py::test_a_body_over_the_limit_is_refused_before_it_is_parsed",)),
    Removal("body limit back to Django's 2.5 MB", "egressportal/settings.py",
            'env.int("API_MAX_BODY_BYTES", default=256 * 1024)',
            'env.int("API_MAX_BODY_BYTES", default=2621440)',
            ("tests/security/test_limits.py::test_the_default_body_limit_is_small",)),
    Removal("list length caps removed", "egressportal/api/serializers.py",
            '    return {"max_length": limit, "error_messages": messages, **kwargs}',
            "    return dict(kwargs)",
            ("tests/security/test_limits.py::test_long_lists_are_refused_with_the_cap_named",)),
    Removal("query value cap removed", "egressportal/api/views.py",
            "            if len(name) > limits.MAX_QUERY_VALUE_CHARS or any(",
            "            if False and any(",
            ("tests/security/test_limits.py::test_long_text_fields_and_query_values_are_refused",)),
    # Client address, log-in limits
    Removal("throttles key on DRF's X-Forwarded-For reading", "egressportal/api/throttling.py",
            "        return client_address(request)",
            "        return super().get_ident(request)",
            ("tests/security/test_client_address.py::test_a_forged_forwarded_for_does_not_escape_the_anonymous_throttle",)),
    Removal("client address from the leftmost X-Forwarded-For entry", "egressportal/clientaddr.py",
            "    candidate = entries[-min(trusted_proxies, len(entries))]",
            "    candidate = entries[0]",
            ("tests/security/test_client_address.py",)),
    Removal("axes reads REMOTE_ADDR (no trusted-proxy rule)", "egressportal/settings.py",
            'AXES_CLIENT_IP_CALLABLE = "egressportal.clientaddr.client_address"',
            "",
            ("tests/security/test_client_address.py::test_login_limit_behind_a_trusted_proxy_counts_the_real_client",)),
    Removal("no per-address log-in limit (per username and address only)", "egressportal/loginlimits.py",
            "    return max(pair_failures, address_failures * pair_limit // max(1, address_limit))",
            "    return pair_failures",
            ("tests/security/test_login_lockout.py::test_password_spraying_from_one_address_is_locked_out",)),
    Removal("a success clears the whole address's failures", "egressportal/loginlimits.py",
            "        count, _ = AccessAttempt.objects.filter(ip_address=request.axes_ip_address, username=username).delete()",
            "        count, _ = AccessAttempt.objects.filter(ip_address=request.axes_ip_address).delete()",
            ("tests/security/test_login_lockout.py::test_logging_in_to_ones_own_account_does_not_clear_the_address",)),
    Removal("X-Forwarded-Proto trusted without proxies", "egressportal/settings.py",
            '["X-Forwarded-Proto", "https"] if TRUSTED_PROXIES else []',
            '["X-Forwarded-Proto", "https"]',
            ("tests/security/test_client_address.py::test_the_https_header_is_trusted_only_behind_trusted_proxies",)),
    # What a tenant learns from a failure
    Removal("the app's status and timeline carry the raw reconcile error", "egressportal/core/services/hostsync.py",
            "    tenant_message = reconcile_failure_message(host_kind=host.kind, host_name=host.name, error_kind=ssh_error_kind)",
            "    tenant_message = message",
            ("tests/security/test_tenant_messages.py",)),
    # Probes
    Removal("/readyz details for everyone", "egressportal/ops/views.py",
            '    body = report if _may_see_details(request) else {"status": report["status"]}',
            "    body = report",
            ("tests/ops/test_http.py::test_readyz_tells_the_anonymous_the_status_only",)),
    # Addresses withdrawn in a drain
    Removal("withdrawn addresses free after the quarantine although their app is dedicated",
            "egressportal/core/capacity.py",
            "        & ~Q(last_app__egress_type=EgressType.DEDICATED)\n",
            "",
            ("tests/test_domain.py::TestEgress::test_a_withdrawn_address_stays_reserved_past_the_quarantine_while_its_app_is_dedicated",)),
    # Tokens
    Removal("tokens stored reversibly (hex of the token instead of its SHA-512)", "egressportal/settings.py",
            '    "TOKEN_PREFIX": "egp_",',
            '    "TOKEN_PREFIX": "egp_",\n    "SECURE_HASH_ALGORITHM": "egressportal.tokens.models.Reversible",',
            ("tests/security/test_tokens.py::test_tokens_are_stored_hashed_never_in_clear",),
            also=(("egressportal/tokens/models.py", '__all__ = ["ApiToken"]\n',
                   '__all__ = ["ApiToken"]\n\n\nclass Reversible:\n'
                   '    def __init__(self):\n        self.data = b""\n\n'
                   '    def update(self, data):\n        self.data += data\n\n'
                   '    def hexdigest(self):\n        return self.data.hex()\n'),),
            ),
    Removal("expired tokens keep working", "egressportal/tokens/authentication.py",
            "        if auth_token.expiry is not None and auth_token.expiry < timezone.now():",
            "        if False:",
            ("tests/security/test_tokens.py::test_tokens_expire",)),
    Removal("token list not scoped to its owner", "egressportal/tokens/selectors.py",
            "    return ApiToken.objects.filter(user=user).filter(",
            "    return ApiToken.objects.filter(",
            ("tests/security/test_tokens.py::test_a_token_cannot_see_or_revoke_someone_elses",
             "tests/security/test_tokens.py::test_portal_is_tenant_scoped")),
    Removal("old-style tokens get the generic 401", "egressportal/tokens/authentication.py",
            "            raise exceptions.AuthenticationFailed(RETIRED_TOKEN_MESSAGE)",
            "            pass",
            ("tests/security/test_tokens.py::test_an_old_style_token_is_told_what_to_do",)),
    Removal("the page showing a new token may be cached", "egressportal/portal/token_views.py",
            "@never_cache  # the page that shows a new token must not be kept by any cache\n",
            "",
            ("tests/security/test_tokens.py::test_portal_makes_a_token_shows_it_once_and_revokes_it",)),
    Removal("the admin shows a token's digest", "egressportal/tokens/admin.py",
            '    fields = ["name", "user", "created", "expiry", "last_used_at"]',
            '    fields = ["name", "user", "created", "expiry", "last_used_at", "digest"]',
            ("tests/security/test_tokens.py::test_staff_see_who_holds_tokens_but_never_a_token",)),
]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run(removal: Removal) -> str:
    with tempfile.TemporaryDirectory(prefix="removal-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        for name, old, new in ((removal.path, removal.old, removal.new), *removal.also):
            path = tree / name
            text = path.read_text()
            if text.count(old) != 1:
                return f"STALE ({text.count(old)} matches in {name})"
            path.write_text(text.replace(old, new))
        result = subprocess.run(
            [str(PYTEST), "-q", "-p", "no:cacheprovider", *removal.tests],
            cwd=tree, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True, timeout=1800,
        )
        summary = re.findall(r"(\d+ failed|\d+ errors?)", result.stdout.splitlines()[-1] if result.stdout else "")
        if result.returncode == 0:
            return "PASSED (the test did not notice!)"
        return ", ".join(summary) or f"exit {result.returncode}: {result.stdout[-300:]}"


def main() -> int:
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    bad = 0
    print("| defence removed (file) | test that failed | result |\n|---|---|---|")
    for removal in REMOVALS:
        if wanted and wanted not in removal.name:
            continue
        outcome = run(removal)
        bad += not re.match(r"^\d+ (failed|error)", outcome)
        tests = "<br>".join(f"`{t}`" for t in removal.tests)
        print(f"| {removal.name} (`{removal.path}`) | {tests} | {outcome} |", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
