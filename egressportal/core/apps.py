from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "egressportal.core"
    label = "core"
    verbose_name = "Egress"
