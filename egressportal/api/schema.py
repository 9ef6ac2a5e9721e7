"""OpenAPI: the error shape, documented on every operation."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

__all__ = ["ApiAutoSchema", "ApiTokenScheme", "ErrorSerializer"]


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Our (knox) token authentication, in the schema as DRF's token scheme was: the same header."""

    target_class = "egressportal.tokens.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "'Token <token>': make a token in the portal (API tokens page); it is shown once.",
        }


class ErrorDetailSerializer(serializers.Serializer):
    # "fields" would shadow Serializer.fields as a declared attribute.
    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "code": serializers.CharField(help_text="Stable machine-readable code, e.g. invalid, not_found, pool_exhausted."),
            "message": serializers.CharField(help_text="What went wrong and what to do about it."),
            "fields": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                required=False,
                help_text="Input problems by field name (only for 400 responses).",
            ),
        }


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class ApiAutoSchema(AutoSchema):
    """Adds the error responses every operation can give, unless a view documents them itself."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        codes = ["400", "401", "403", "429"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]  # a body over the size limit, or not JSON
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
        return dict(sorted(responses.items()))
