"""The domain's signals, turned into notifications."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from egressportal.core.models import App

from .services import notifications_app_status_changed

logger = logging.getLogger(__name__)


def on_egress_status_changed(sender: Any, *, app: App, old_status: str, new_status: str, message: str = "",
                             **_: Any) -> None:
    try:
        # A savepoint: a failure here rolls back only the notification rows, never the status change.
        with transaction.atomic():
            notifications_app_status_changed(app=app, old_status=old_status, new_status=new_status, message=message)
    except Exception:  # a notification never undoes a status change; the failure is logged
        logger.exception("could not queue notifications for app %s", app.pk)
