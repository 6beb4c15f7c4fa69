"""Views that show what the Clerk middleware made of a request (token tests only)."""

from django.http import JsonResponse
from django.urls import include, path


def describe(request, user):
    claims = getattr(request, "clerk", None)
    return {
        "authenticated": bool(user.is_authenticated),
        "user": user.get_username() if user.is_authenticated else None,
        "clerk_user_id": claims.user_id if claims else None,
        "session_id": claims.session_id if claims else None,
        "org_id": claims.org_id if claims else None,
        "rejection": getattr(request, "clerk_rejection", "middleware did not run"),
    }


def whoami(request):
    return JsonResponse(describe(request, request.user))


def claims(request):
    """What a view may read from ``request.clerk``: every shortcut, and the claims."""
    session = getattr(request, "clerk", None)
    body = describe(request, request.user)
    if session is not None:
        body.update(
            org=[session.org_id, session.org_slug, session.org_role],
            organization=session.organization is not None,
            actor=session.actor is not None,
            claim_names=sorted(session.claims),
        )
    return JsonResponse(body)


async def awhoami(request):
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else request.user
    return JsonResponse(describe(request, user))


urlpatterns = [
    path("whoami/", whoami),
    path("claims/", claims),
    path("awhoami/", awhoami),
    path("api/webhooks/", include("django_clerk_sync.urls")),
]

try:
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.renderers import JSONRenderer
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from django_clerk_sync.contrib.drf import ClerkAuthentication
except ImportError:  # DRF is an optional extra; tests/test_drf.py skips without it
    pass
else:

    class DRFWhoAmI(APIView):
        authentication_classes = [ClerkAuthentication]
        permission_classes = [IsAuthenticated]
        renderer_classes = [JSONRenderer]

        def get(self, request):
            return Response(
                {
                    "user": request.user.get_username(),
                    "clerk_user_id": getattr(request.auth, "user_id", None),
                    "session_id": getattr(request.auth, "session_id", None),
                }
            )

        post = get  # an unsafe method, for the CSRF tests

    urlpatterns.append(path("drf/whoami/", DRFWhoAmI.as_view()))
