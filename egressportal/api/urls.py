from csp.decorators import csp_update
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from . import views
from .exceptions import not_found_view

app_name = "api"

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("apps", views.AppViewSet, basename="app")
router.register("addresses", views.AddressViewSet, basename="address")
router.register("regions", views.RegionViewSet, basename="region")
router.register("pools", views.PoolViewSet, basename="pool")
router.register("gateways", views.GatewayViewSet, basename="gateway")
router.register("nodes", views.NodeViewSet, basename="node")
router.register("audit", views.AuditViewSet, basename="audit")
router.register("tokens", views.ApiTokenViewSet, basename="token")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages keep the strict script policy (the split view loads its init script from a URL, no
    # inline script) and relax only styles: both UIs inject <style> and style attributes at run time.
    path(
        "docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="api:schema")),
        name="docs",
    ),
    path(
        "redoc/",
        csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})(
            SpectacularRedocView.as_view(url_name="api:schema")
        ),
        name="redoc",
    ),
    *router.urls,
    # Anything else under /api/v1/ answers in the API's error shape.
    re_path(r"^.*$", not_found_view),
]
