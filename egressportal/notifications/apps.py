from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "egressportal.notifications"
    label = "notifications"
    verbose_name = "Notifications"
