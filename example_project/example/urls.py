from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The webhook URL for the Clerk dashboard: https://<your host>/api/webhooks/clerk/
    path("api/webhooks/", include("django_clerk_sync.urls")),
]
