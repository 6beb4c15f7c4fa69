"""The admin pages in a real browser: headless Chromium, driven by Selenium.

A superuser logs in through the admin's login form on pytest-django's live server,
and deliveries arrive there over real HTTP, signed by svix's own signer. The module
skips, saying how to enable it, when Selenium or Chromium is missing.
"""

import json
import shutil

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from django_clerk_sync import get_user
from django_clerk_sync.models import ClerkUserLink, WebhookEvent
from django_clerk_sync.testing import clerk_user, deliver, event

from .conftest import SECRET, load_event, to_body
from .test_webhook_http import unique_email_index  # noqa: F401  (a fixture)

webdriver = pytest.importorskip(
    "selenium.webdriver",
    reason="browser tests need Selenium: .venv/bin/pip install 'selenium>=4.11'",
)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "browser tests need chromium and chromedriver on PATH: "
        "apt-get install chromium chromium-driver (Debian)",
        allow_module_level=True,
    )

# The user in tests/fixtures/user_created.json.
CLERK_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"
EMAIL = "example@example.org"
WAIT = 10  # seconds; every wait ends as soon as its condition holds


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium Manager never looks for (or downloads) a browser.
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root; the pages are our own, on loopback
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--window-size=1280,1024",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


@pytest.fixture
def admin(browser, live_server, settings):
    """The browser, logged in as a superuser through the admin's login form."""
    # A fast hasher: the default one's cost is deliberate, and slow in tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_user_model().objects.create_superuser("admin", "admin@example.org", "pw")
    browser.delete_all_cookies()
    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys("pw")
    submit(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    assert "admin" in browser.find_element(By.ID, "user-tools").text.lower()
    return browser


@pytest.fixture
def post(live_server):
    """Deliver a signed event to the live server over HTTP; return the status."""
    url = live_server.url + reverse("django_clerk_sync:webhook")

    def send(envelope, svix_id):
        status, _, _ = deliver(url, SECRET, to_body(envelope), svix_id=svix_id)
        return status

    return send


def submit(browser, element):
    """Click ``element`` and wait until the page it leads to has loaded."""
    # A mark on the old page's window: gone once the new page replaced it. (Polling
    # the old page's elements for staleness races chromedriver mid-navigation.)
    clicked = element.text or element.get_attribute("value")
    browser.execute_script("window.clerkOldPage = true")
    element.click()
    WebDriverWait(
        browser,
        WAIT,
        ignored_exceptions=[WebDriverException],  # mid-navigation
    ).until(
        lambda b: b.execute_script(
            "return !window.clerkOldPage && document.readyState === 'complete'"
        ),
        f"no new page loaded after clicking {clicked!r}",
    )


def open_page(browser, live_server, url_name, *args):
    browser.get(live_server.url + reverse(url_name, args=args))


def listed(browser):
    """The svix-ids in the event list, top to bottom."""
    return [
        link.text
        for link in browser.find_elements(
            By.CSS_SELECTOR, "#result_list th.field-svix_id a"
        )
    ]


def filter_by(browser, choice):
    sidebar = browser.find_element(By.ID, "changelist-filter")
    submit(browser, sidebar.find_element(By.LINK_TEXT, choice))


def search(browser, text):
    box = browser.find_element(By.ID, "searchbar")
    box.clear()
    box.send_keys(text)
    button = browser.find_element(By.CSS_SELECTOR, "#changelist-search [type=submit]")
    submit(browser, button)


def message(browser):
    return browser.find_element(By.CSS_SELECTOR, "ul.messagelist li")


def test_event_log_filters_by_status_and_type_and_searches_by_ids(
    admin, live_server, post, settings
):
    other = clerk_user("user_2other000000000000000000", email="other@example.org")
    assert post(event("user.created", other), "msg_other") == 200
    assert post(load_event("user_created"), "msg_created") == 200
    assert post(load_event("session_created"), "msg_session") == 200

    def broken(user):
        raise RuntimeError("field map bug")

    settings.CLERK_SYNC_FIELD_MAP = {"first_name": broken}
    assert post(load_event("user_updated"), "msg_updated") == 500
    assert post(event("user.created", clerk_user("user_2new")), "msg_new") == 500

    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    assert sorted(listed(admin)) == [
        "msg_created",
        "msg_new",
        "msg_other",
        "msg_session",
        "msg_updated",
    ]

    filter_by(admin, "Failed")
    assert sorted(listed(admin)) == ["msg_new", "msg_updated"]
    filter_by(admin, "user.updated")  # narrows the status filter, does not replace it
    assert listed(admin) == ["msg_updated"]
    assert "status__exact=failed" in admin.current_url
    assert admin.find_element(By.CSS_SELECTOR, "td.field-status").text == "Failed"
    assert admin.find_element(By.CSS_SELECTOR, "td.field-outcome").text == (
        "error: RuntimeError: field map bug"
    )

    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    filter_by(admin, "session.created")
    assert listed(admin) == ["msg_session"]
    assert admin.find_element(By.CSS_SELECTOR, "td.field-status").text == "Ignored"

    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    search(admin, "msg_other")
    assert listed(admin) == ["msg_other"]
    search(admin, CLERK_ID)  # one user's whole history
    assert sorted(listed(admin)) == ["msg_created", "msg_updated"]
    search(admin, CLERK_ID[:12])  # whole ids only, by design
    assert listed(admin) == []


def test_an_event_shows_its_payload_readably_and_cannot_be_edited(
    admin, live_server, post
):
    envelope = load_event("user_created", first_name="Zoë")
    assert post(envelope, "msg_payload") == 200

    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    submit(admin, admin.find_element(By.LINK_TEXT, "msg_payload"))

    payload = admin.find_element(By.CSS_SELECTOR, ".field-payload pre")
    text = payload.text
    assert json.loads(text) == envelope  # the whole payload, nothing lost
    assert '\n  "data": {\n    "backup_code_enabled": false,' in text  # indented
    assert '"first_name": "Zoë"' in text  # readable, not \u00eb
    assert payload.value_of_css_property("white-space") == "pre-wrap"
    assert payload.size["width"] <= admin.find_element(By.ID, "content").size["width"]
    assert admin.find_element(By.CSS_SELECTOR, ".field-status .readonly").text == (
        "Processed"
    )
    assert not admin.find_elements(By.NAME, "_save")
    assert not admin.find_elements(
        By.CSS_SELECTOR, "#content input:not([type=hidden]), textarea, select"
    )


def test_reprocess_selected_processes_a_failure_whose_cause_was_fixed(
    admin, live_server, post, unique_email_index
):
    local = get_user_model().objects.create_user("ada-local", email=EMAIL)
    assert post(load_event("user_created"), "msg_clash") == 409
    assert post(load_event("session_created"), "msg_session") == 200
    failed = WebhookEvent.objects.get(svix_id="msg_clash")
    assert (failed.status, get_user(CLERK_ID)) == ("failed", None)

    # The fix: the operator moves the local account off the clashing email.
    open_page(admin, live_server, "admin:auth_user_change", local.pk)
    email = admin.find_element(By.ID, "id_email")
    email.clear()
    email.send_keys("ada-local@example.org")
    submit(admin, admin.find_element(By.NAME, "_save"))
    assert "was changed successfully" in message(admin).text

    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    filter_by(admin, "Failed")
    assert listed(admin) == ["msg_clash"]
    assert admin.find_element(By.CSS_SELECTOR, "td.field-outcome").text.startswith(
        "permanent: SyncConflict"
    )
    admin.find_element(
        By.CSS_SELECTOR, f"input.action-select[value='{failed.pk}']"
    ).click()
    # The admin's JavaScript counts the selection: proof the page really runs it.
    WebDriverWait(admin, WAIT).until(
        EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".action-counter"), "1 of 1")
    )
    Select(admin.find_element(By.NAME, "action")).select_by_visible_text(
        "Reprocess selected events"
    )
    submit(admin, admin.find_element(By.CSS_SELECTOR, "button[name=index]"))

    assert message(admin).text == "1 event(s) processed, 0 failed again."
    assert "success" in message(admin).get_attribute("class")
    assert listed(admin) == []  # still filtered to failed: none left
    open_page(admin, live_server, "admin:django_clerk_sync_webhookevent_changelist")
    row = admin.find_element(
        By.XPATH, "//table[@id='result_list']//tr[.//a[text()='msg_clash']]"
    )
    assert row.find_element(By.CSS_SELECTOR, "td.field-status").text == "Processed"
    assert row.find_element(By.CSS_SELECTOR, "td.field-outcome").text == "created"
    assert row.find_element(By.CSS_SELECTOR, "td.field-attempts").text == "2"

    failed.refresh_from_db()
    assert (failed.status, failed.outcome, failed.last_error) == (
        "processed",
        "created",
        "",
    )
    synced = get_user(CLERK_ID)
    assert synced is not None and synced.pk != local.pk and synced.email == EMAIL
    local.refresh_from_db()
    assert local.email == "ada-local@example.org"


def test_the_user_page_shows_its_clerk_link_and_still_saves(admin, live_server, post):
    assert post(load_event("user_created"), "msg_created") == 200
    user = get_user(CLERK_ID)
    link = ClerkUserLink.objects.get(clerk_id=CLERK_ID)

    open_page(admin, live_server, "admin:auth_user_change", user.pk)
    inline = admin.find_element(By.ID, "clerk_link-group")
    assert "Clerk user link" in inline.text
    assert inline.find_element(By.CSS_SELECTOR, ".field-clerk_id .readonly").text == (
        CLERK_ID
    )
    assert not inline.find_elements(By.CSS_SELECTOR, "input:not([type=hidden])")

    # Saving the user keeps the read-only link as it was.
    first_name = admin.find_element(By.ID, "id_first_name")
    first_name.clear()
    first_name.send_keys("Ada")
    submit(admin, admin.find_element(By.NAME, "_save"))
    assert "was changed successfully" in message(admin).text
    user.refresh_from_db()
    assert user.first_name == "Ada"
    assert ClerkUserLink.objects.get(pk=link.pk).user_id == user.pk

    open_page(admin, live_server, "admin:auth_user_change", user.pk)
    view = admin.find_element(By.CSS_SELECTOR, "#clerk_link-group a.inlineviewlink")
    submit(admin, view)
    assert admin.current_url.endswith(
        reverse("admin:django_clerk_sync_clerkuserlink_change", args=[link.pk])
    )
    assert admin.find_element(By.CSS_SELECTOR, ".field-clerk_id .readonly").text == (
        CLERK_ID
    )

    # A user Clerk does not know: the group is there, with no link in it.
    superuser = get_user_model().objects.get(username="admin")
    open_page(admin, live_server, "admin:auth_user_change", superuser.pk)
    inline = admin.find_element(By.ID, "clerk_link-group")
    assert not inline.find_elements(By.CSS_SELECTOR, ".field-clerk_id")
