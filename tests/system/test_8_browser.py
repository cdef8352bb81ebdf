"""What a person sees in a real browser (chromium, real_browser.py), on the booted
appliance with four fake GPUs: the login page, the spawn form's GPU choice, the
spawn-pending page, JupyterLab running a notebook cell, logging out, and why an
administrator's stop ended their server, on their home page.

With APPLIANCE_DOCS_SCREENSHOTS=docs/screenshots the journey also saves the
README's screenshots.
"""

from __future__ import annotations

import re
import time

import pytest

pytest.register_assert_rewrite("real_browser")
from gpus import fake_config, install_fake_gpus  # noqa: E402
from holds import held_start  # noqa: E402
from playwright.sync_api import expect  # noqa: E402
from real_browser import docs_shot, run_in_a_new_notebook  # noqa: E402

pytest_plugins = ["real_browser"]  # the chromium and page fixtures, the screenshot on failure

NAME, PASSWORD = "bella", "bella-in-lab-5"
ADMIN = "dora"  # a hub admin, for the GPU dashboard


@pytest.fixture(scope="module")
def lab(appliance, tmp_path_factory):
    app = appliance
    install_fake_gpus(app, tmp_path_factory, fake_config())
    for who in (NAME, ADMIN):
        app.sh(f"useradd -m {who} && echo {who}:{PASSWORD} | chpasswd && applctl adduser {who} >/dev/null")
    app.sh(f"applctl admin add {ADMIN} >/dev/null")
    # The daemon reads FAKE_NVML_CONFIG from its environment: restart it, as test_4 does.
    app.sh("applctl stop --all >/dev/null; systemctl daemon-reload && systemctl stop jupyterhub-appliance.service")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text("[gpu]\nquota = 2\nqueue = false\n"))
    app.sh("systemctl restart jupyterhub")
    app.wait_hub()
    yield app
    app.sh("applctl stop --all >/dev/null", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def log_in(page, app, name: str = NAME) -> None:
    """The login page as a person finds it: the form, filled in and submitted."""
    page.goto(app.url + "/hub/login")
    expect(page.locator("form", has=page.locator("#username_input"))).to_be_visible()
    page.locator("#username_input").fill(name)
    page.locator("#password_input").fill(PASSWORD)
    docs_shot(page, "login")
    page.locator("#login_submit").click()
    page.wait_for_url(re.compile(r"/hub/(spawn|home)|/user/"))


def test_login_spawn_with_a_gpu_run_a_cell_and_log_out(lab, page):
    app = lab
    log_in(page, app)

    # The spawn form: the fake NVML's four GPUs, and this user's quota of two.
    form = page.locator("#spawn_form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("4 of 4 GPUs free now; your quota is 2 GPUs.")
    gpus = form.locator("select#gpus")
    expect(gpus.locator("option")).to_have_text(["no GPU", "1 GPU", "2 GPUs"])
    gpus.select_option("1")
    docs_shot(page, "spawn-form-gpu")

    # The progress page. The start is held until the page has been seen (holds.py):
    # a fast server is ready within JupyterHub's slow-spawn wait, and the browser
    # then goes straight on to JupyterLab, which is the product working.
    with held_start(app, NAME) as release:
        form.get_by_role("button", name="Start").click()
        page.wait_for_url(re.compile(rf"/hub/spawn-pending/{NAME}"), timeout=60000)
        expect(page.get_by_text("Your server is starting up.")).to_be_visible()
        expect(page.locator(".progress #progress-bar")).to_be_visible()
        expect(page.locator("#progress-log")).to_contain_text("Assigned GPUs: GPU-")
        release()

    # JupyterLab, its launcher, and a new Python 3 notebook from it.
    expect(run_in_a_new_notebook(page, NAME, "print(6*7)")).to_have_text(re.compile(r"^\s*42\s*$"))
    docs_shot(page, "jupyterlab-notebook")

    # File -> Log Out: back to the login page.
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name="Log Out", exact=True).click()
    page.wait_for_url(re.compile(r"/hub/login"))
    expect(page.locator("#username_input")).to_be_visible()
    expect(page.locator("#login_submit")).to_be_visible()


def test_the_gpu_dashboard_shows_an_admin_who_holds_which_gpu_and_updates_itself(lab, page):
    app = lab  # bella's server from the journey above still runs, with one GPU
    log_in(page, app, ADMIN)
    link = page.locator("#appliance-gpus-link")
    expect(link).to_be_visible()
    link.click()
    page.wait_for_url(re.compile(r"/services/gpus/$"))
    cards = page.locator("article.gpu")
    expect(cards).to_have_count(4)
    held = cards.filter(has=page.locator(".holder", has_text=NAME))
    expect(held).to_have_count(1)
    expect(held).to_contain_text("Utilization")
    expect(held.locator("svg.history")).to_be_visible()
    expect(cards.locator(".free")).to_have_count(3)
    expect(page.locator("#servers tbody tr")).to_have_count(1)
    expect(page.locator("#servers tbody tr")).to_contain_text(NAME)
    expect(page.locator("#queue-empty")).to_be_visible()
    docs_shot(page, "dashboard")
    # Live: the page redraws from its API without being reloaded.
    before = page.locator("#updated").text_content()
    expect(page.locator("#updated")).not_to_have_text(before, timeout=15000)
    expect(page.locator("#error")).to_have_text("")


def test_home_page_says_an_administrator_stopped_the_server(lab, page):
    app = lab
    log_in(page, app)
    if "/hub/spawn" in page.url:  # the journey above did not leave a server running
        page.locator("select#gpus").select_option("0")
        page.locator("#spawn_form").get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(rf"/user/{NAME}/lab"))
    # JupyterLab, with the notebook of the journey above reopened or with its launcher.
    expect(page.get_by_role("menuitem", name="File", exact=True)).to_be_visible()

    app.sh(f"applctl stop {NAME}")
    # The hub learns of the stop when it next polls the server: reload until it has.
    reason = page.locator("#appliance-stop-reason")
    deadline = time.monotonic() + 120
    while True:
        page.goto(app.url + "/hub/home")
        if reason.count():
            break
        assert time.monotonic() < deadline, "the home page never said why the server stopped"
        time.sleep(2)
    expect(reason).to_be_visible()
    expect(reason).to_have_text(re.compile(
        r"^\s*Your server was stopped at \d\d:\d\d on \d\d \w+ because an administrator stopped it\.\s*$"))
    expect(page.locator("#start")).to_contain_text("Start My Server")
    docs_shot(page, "home-stop-reason")
