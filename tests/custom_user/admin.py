"""A project's own admin for its custom user model.

``tests.custom_user`` comes after ``django_clerk_sync`` in INSTALLED_APPS, so this
registers after the package's admin: the Clerk link must appear here all the same.
"""

from django.contrib import admin

from .models import EmailUser


@admin.register(EmailUser)
class EmailUserAdmin(admin.ModelAdmin):
    fields = ("email", "full_name", "member_since", "is_active", "is_staff")
