from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "egressportal.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # Imported here: receivers use the models, which are loaded only once the registry is ready.
        from egressportal.core.signals import egress_status_changed

        from .receivers import on_egress_status_changed

        egress_status_changed.connect(on_egress_status_changed, dispatch_uid="notifications.egress_status_changed")
