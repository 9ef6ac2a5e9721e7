from django.urls import path

from . import views

app_name = "notifications"
urlpatterns = [
    path("", views.notification_settings, name="settings"),
    path("webhooks/<int:pk>/", views.webhook_detail, name="webhook"),
    path("webhooks/<int:pk>/<str:action>/", views.webhook_action, name="webhook_action"),
]
