from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "egressportal.api"
    label = "api"
