"""The append-only timeline of an app and the audit log of who changed what."""

from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["Event", "EventLevel"]


class EventLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class EventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Events are append-only.")

    def delete(self):
        raise TypeError("Events are append-only.")


class Event(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=64, db_index=True, help_text="e.g. egress.enabled, host.reconciled")
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    message = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Who: a user name, or 'worker'/'system'.")
    app = models.ForeignKey("core.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    gateway = models.ForeignKey(
        "core.Gateway", on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    node = models.ForeignKey("core.Node", on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    # What the event is about as text, kept when the object is gone.
    subject = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Details: before/after, duration, error.")

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["app", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind}: {self.message}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise TypeError("Events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Events are append-only.")
