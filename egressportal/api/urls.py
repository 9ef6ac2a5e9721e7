from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views
from .exceptions import not_found_view

app_name = "api"

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("apps", views.AppViewSet, basename="app")
router.register("regions", views.RegionViewSet, basename="region")
router.register("pools", views.PoolViewSet, basename="pool")
router.register("gateways", views.GatewayViewSet, basename="gateway")
router.register("nodes", views.NodeViewSet, basename="node")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    *router.urls,
    # Anything else under /api/v1/ answers in the API's error shape.
    re_path(r"^.*$", not_found_view),
]
