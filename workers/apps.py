"""The worker side as a Django app: no models, the ``lab`` management command, and the lab locator the
portal's "Check egress" uses (registered here because the portal never imports the workers)."""

from __future__ import annotations

from django.apps import AppConfig

from .lab import running_lab


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        # Imported here, not at the top: Django imports this module while it loads the apps, before
        # the models (which labcheck imports) are ready.
        from egressportal.core.labcheck import lab_locator_set

        lab_locator_set(running_lab)
