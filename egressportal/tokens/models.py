"""API tokens (django-rest-knox): only a hash is stored, every token expires, a user has several, each with
a name, and any one can be revoked. The token itself is shown once, when it is made."""

from __future__ import annotations

from django.db import models
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS

__all__ = ["ApiToken"]


class ApiToken(AbstractAuthToken):
    # knox keys tokens by their digest; a plain id is what pages and the API refer to instead, so that
    # nothing derived from the secret appears in a URL.
    id = models.BigAutoField(primary_key=True)
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True, editable=False)
    name = models.CharField(max_length=64, help_text="What the token is for, e.g. 'terraform' or 'ci'.")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apitoken_unique_name_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"
