"""The package's settings, read from ``django.conf.settings`` on every access.

Nothing here is computed at import time, so ``override_settings`` (in tests) and
settings changed at run time take effect at once.
"""

from django.conf import settings as django_settings

#: The default ``CLERK_SYNC_FIELD_MAP``, trimmed to the fields the user model has.
DEFAULT_FIELD_MAP_SOURCES = {
    "email": "primary_email",
    "first_name": "first_name",
    "last_name": "last_name",
    "username": "username",
}

DELETE_POLICIES = ("deactivate", "delete")


class ClerkSyncSettings:
    @property
    def WEBHOOK_SECRETS(self):
        """``CLERK_WEBHOOK_SECRET``: the endpoint's signing secret(s) from the Clerk
        dashboard (``whsec_...``). A string, or a list of strings while rotating a
        secret or receiving from several Clerk instances; a delivery signed with any
        of them is accepted. Default: unset (every delivery is refused with 503, as
        it is when the value is of another type)."""
        value = getattr(django_settings, "CLERK_WEBHOOK_SECRET", None)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
        return []  # no usable secret (system check E001 names the mistake)

    @property
    def FIELD_MAP(self):
        """``CLERK_SYNC_FIELD_MAP``: ``{user model field: source}``. A source is a
        computed name (``primary_email``, ``primary_phone``, ``full_name``,
        ``image_url``), a dotted path into the Clerk user JSON
        (``"public_metadata.plan"``), a callable taking the Clerk user dict, or a
        ``"module.path:function"`` string naming one. Setting it replaces the default
        entirely. Clerk's millisecond times (``"created_at"``) written to a date or
        datetime field are converted (UTC); ``None`` written to a non-null text field
        becomes ``""``. Default: primary email, first name, last name and username, for
        whichever of those fields the user model has."""
        value = getattr(django_settings, "CLERK_SYNC_FIELD_MAP", None)
        if value is not None:
            return dict(value)
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        fields = {f.name for f in user_model._meta.get_fields()}
        defaults = dict(DEFAULT_FIELD_MAP_SOURCES)
        # Custom models name their email and login fields as they like.
        defaults[user_model.get_email_field_name()] = defaults.pop("email")
        username_field = user_model.USERNAME_FIELD
        if username_field != user_model.get_email_field_name():
            defaults[username_field] = defaults.pop("username")
        return {field: source for field, source in defaults.items() if field in fields}

    @property
    def ON_DELETE(self):
        """``CLERK_SYNC_ON_DELETE``: what a ``user.deleted`` does to the Django user.
        ``"deactivate"`` (default: ``is_active=False``, nothing lost), ``"delete"``,
        or a callable (or ``"module.path:function"``) called with the user."""
        return getattr(django_settings, "CLERK_SYNC_ON_DELETE", "deactivate")


clerk_settings = ClerkSyncSettings()
