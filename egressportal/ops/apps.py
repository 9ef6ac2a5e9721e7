from django.apps import AppConfig
from django.core.signals import request_finished, request_started


class OpsConfig(AppConfig):
    name = "egressportal.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Not at the top: the middleware module imports the views and, through the metrics, the
        # models, which Django cannot import while it is still loading this app config.
        from .middleware import bind_request, unbind_request

        request_started.connect(bind_request, dispatch_uid="egress-ops-request-id")
        request_finished.connect(unbind_request, dispatch_uid="egress-ops-request-id")
