"""ClerkBackend: ``authenticate(request, clerk_token=...)`` and ``login()`` for projects
that want Django sessions on top of a Clerk sign-in."""

import pytest
from django.contrib.auth import authenticate, get_user_model, login
from django.http import HttpResponse, JsonResponse
from django.test import Client, RequestFactory
from django.urls import path

from django_clerk_sync import sync
from django_clerk_sync.testing import clerk_user

from .token_support import clerk_env, fresh_verifiers, sim  # noqa: F401  (fixtures)

BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "django_clerk_sync.backends.ClerkBackend",
]
CLERK_ID = "user_2session"


def sign_in(request):
    """A project's view: exchange a Clerk token for a Django session."""
    token = request.POST.get("token")
    user = authenticate(request, clerk_token=token)
    if user is None:
        return JsonResponse({"rejection": request.clerk_rejection}, status=401)
    login(request, user)
    return HttpResponse("signed in")


def me(request):
    user = request.user
    return JsonResponse(
        {"user": user.get_username() if user.is_authenticated else None}
    )


urlpatterns = [path("sign-in/", sign_in), path("me/", me)]


@pytest.fixture
def session_env(clerk_env):
    """Sessions only: the backend without the middleware."""
    clerk_env.AUTHENTICATION_BACKENDS = BACKENDS
    clerk_env.ROOT_URLCONF = "tests.test_backends"
    clerk_env.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    return clerk_env


@pytest.fixture
def linked(db):
    return sync.sync_user(clerk_user(CLERK_ID, username="ses"), source="webhook").user


def test_authenticate_returns_the_tokens_user(sim, session_env, linked):
    request = RequestFactory().get("/")

    user = authenticate(request, clerk_token=sim.mint_session_token(CLERK_ID))

    assert user == linked
    assert user.backend == "django_clerk_sync.backends.ClerkBackend"
    assert request.clerk.user_id == CLERK_ID and request.clerk_rejection is None


def test_authenticate_with_a_bad_token_says_why(sim, session_env, linked):
    request = RequestFactory().get("/")
    token = sim.mint_session_token(CLERK_ID, azp="https://evil.example.com")

    assert authenticate(request, clerk_token=token) is None
    assert (request.clerk, request.clerk_rejection) == (None, "wrong_party")


def test_username_and_password_never_reach_the_clerk_backend(sim, session_env, db):
    get_user_model().objects.create_user("local", password="pw")

    assert authenticate(username="local", password="pw").username == "local"
    assert authenticate(username="local", password="wrong") is None


def test_login_starts_a_django_session_that_outlives_the_token(
    sim, session_env, linked
):
    client = Client()

    response = client.post("/sign-in/", {"token": sim.mint_session_token(CLERK_ID)})

    assert response.status_code == 200
    assert client.get("/me/").json() == {"user": "ses"}


def test_a_new_clerk_user_signs_in_through_the_sync_path(sim, session_env, db):
    client = Client()

    assert (
        client.post(
            "/sign-in/", {"token": sim.mint_session_token("user_2fresh")}
        ).status_code
        == 200
    )
    assert client.get("/me/").json() == {"user": "user_2fresh"}


def test_the_session_ends_when_clerk_deletes_the_user(sim, session_env, linked):
    client = Client()
    client.post("/sign-in/", {"token": sim.mint_session_token(CLERK_ID)})

    sync.delete_user(CLERK_ID, source="webhook")

    assert client.get("/me/").json() == {"user": None}


def test_the_session_ends_when_the_user_is_deactivated(sim, session_env, linked):
    client = Client()
    client.post("/sign-in/", {"token": sim.mint_session_token(CLERK_ID)})
    linked.is_active = False
    linked.save()

    assert client.get("/me/").json() == {"user": None}


def test_a_deleted_user_cannot_sign_in(sim, session_env, linked):
    sync.delete_user(CLERK_ID, source="webhook")

    response = Client().post("/sign-in/", {"token": sim.mint_session_token(CLERK_ID)})

    assert (response.status_code, response.json()) == (
        401,
        {"rejection": "user_deleted"},
    )


def test_a_user_deleted_locally_cannot_sign_in_again(sim, session_env, db):
    client = Client()
    token = sim.mint_session_token("user_2gone")
    assert client.post("/sign-in/", {"token": token}).status_code == 200  # first sight
    get_user_model().objects.get().delete()  # removed locally

    response = Client().post(
        "/sign-in/", {"token": sim.mint_session_token("user_2gone")}
    )

    assert response.status_code == 401
    assert response.json() == {"rejection": "user_deleted_locally"}
    assert not get_user_model().objects.exists()


def test_permissions_work_as_with_model_backend(sim, session_env, linked):
    from django.contrib.auth.models import Permission

    linked.user_permissions.add(Permission.objects.get(codename="view_user"))
    user = authenticate(
        RequestFactory().get("/"), clerk_token=sim.mint_session_token(CLERK_ID)
    )

    assert user.has_perm("auth.view_user")
