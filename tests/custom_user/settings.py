"""Settings for the custom-user suite: an email-as-username user model.

Run it in its own session:
``python -m pytest --ds=tests.custom_user.settings tests/custom_user``.
"""

from tests.settings import *  # noqa: F401,F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = INSTALLED_APPS + ["tests.custom_user"]
AUTH_USER_MODEL = "custom_user.EmailUser"
