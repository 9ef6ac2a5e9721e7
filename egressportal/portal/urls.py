from django.urls import path

from . import token_views, views

app_name = "portal"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("addresses/", views.addresses, name="addresses"),
    path("addresses/export.csv", views.addresses_export, {"fmt": "csv"}, name="addresses_csv"),
    path("addresses/export.json", views.addresses_export, {"fmt": "json"}, name="addresses_json"),
    path("apps/<int:pk>/", views.app_detail, name="app_detail"),
    path("apps/<int:pk>/egress/", views.app_egress, name="app_egress"),
    path("apps/<int:pk>/egress/disable/", views.app_disable_confirm, name="app_disable_confirm"),
    path("apps/<int:pk>/egress/panel/", views.app_egress_panel, name="app_egress_panel"),
    path("apps/<int:pk>/events/", views.app_events, name="app_events"),
    path("apps/<int:pk>/check-egress/", views.app_check_egress, name="app_check_egress"),
    path("tokens/", token_views.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", token_views.token_revoke, name="token_revoke"),
]
