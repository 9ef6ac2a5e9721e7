from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "egressportal.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.core.signals import request_finished, request_started

        from .middleware import bind_request, unbind_request

        request_started.connect(bind_request, dispatch_uid="egress-ops-request-id")
        request_finished.connect(unbind_request, dispatch_uid="egress-ops-request-id")
