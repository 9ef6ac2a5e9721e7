from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "egressportal.portal"
    label = "portal"
