from django.urls import path

from . import views

app_name = "portal"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("apps/<int:pk>/", views.app_detail, name="app_detail"),
    path("apps/<int:pk>/egress/", views.app_egress, name="app_egress"),
    path("apps/<int:pk>/egress/panel/", views.app_egress_panel, name="app_egress_panel"),
    path("apps/<int:pk>/events/", views.app_events, name="app_events"),
    path("apps/<int:pk>/check-egress/", views.app_check_egress, name="app_check_egress"),
]
