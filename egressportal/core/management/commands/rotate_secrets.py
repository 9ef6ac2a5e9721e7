"""Re-encrypt every stored secret with the current key (the first of EGRESS_FERNET_KEYS).

Key rotation: put a new key first in EGRESS_FERNET_KEYS (keep the old one after it), restart, run
this command, then remove the old key. Idempotent; each row is rewritten only when its ciphertext
changes, and only if it still holds the ciphertext that was read (a concurrent change wins).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from egressportal.core import secrets


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field with the current key of EGRESS_FERNET_KEYS and report counts."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            secrets.fernet()
        except secrets.SecretsError as exc:
            raise CommandError(str(exc)) from None
        total = failed = 0
        for label, field in secrets.ENCRYPTED_FIELDS:
            model = apps.get_model(label)
            rotated = 0
            rows = model.objects.exclude(**{field: ""}).values_list("pk", field)
            for pk, ciphertext in rows.iterator():
                try:
                    fresh = secrets.rotate(ciphertext)
                except secrets.SecretsError:
                    failed += 1
                    self.stderr.write(f"{label} #{pk}: {field} cannot be decrypted with any configured key")
                    continue
                # Compare-and-set: never overwrite a credential changed since it was read.
                rotated += model.objects.filter(pk=pk, **{field: ciphertext}).update(**{field: fresh})
            total += rotated
            self.stdout.write(f"{label}.{field}: {rotated} re-encrypted")
        self.stdout.write(f"Re-encrypted {total} secret(s) with the current key; {failed} could not be read.")
        if failed:
            raise CommandError(f"{failed} secret(s) could not be decrypted; keep their old key until they are replaced.")
