from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

admin.site.site_header = "Egress Portal administration"
admin.site.site_title = "Egress Portal admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("egressportal.api.urls")),
    path("", include("egressportal.ops.urls")),
    path("", include("egressportal.portal.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
