from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "egressportal.tokens"
    label = "tokens"
    verbose_name = "API tokens"
