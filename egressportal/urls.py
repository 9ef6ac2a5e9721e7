from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from egressportal.portal.views import admin_login

admin.site.site_header = "Egress Portal administration"
admin.site.site_title = "Egress Portal admin"
# One way in: the portal's login page (and, for a signed-in non-staff user, a
# page in the portal's look that says the admin site is for platform admins).
admin.site.login = admin_login

handler403 = "egressportal.portal.views.error_403"
handler404 = "egressportal.portal.views.error_404"
handler500 = "egressportal.portal.views.error_500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("egressportal.api.urls")),
    path("", include("egressportal.ops.urls")),
    path("", include("egressportal.portal.urls")),
    path("notifications/", include("egressportal.notifications.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
