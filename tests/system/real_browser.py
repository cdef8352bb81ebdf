"""A real browser for the system tests: Debian's chromium driven by Playwright.

A pytest plugin; a test module loads it with `pytest_plugins = ["real_browser"]`.
Playwright's own browser download is not reachable from these machines, so it
launches /usr/bin/chromium (scripts/host-tools installs it). One chromium per
module, a fresh context (cookies, storage) per test, and timeouts generous
enough for JupyterLab on a 2-core machine: a timeout only says that something
never happened, it measures nothing.

When a test that uses `page` fails, a screenshot of the page is saved under
test-artifacts/screenshots/ at the top of the repository and its path is printed
in the failure report. With APPLIANCE_DOCS_SCREENSHOTS=DIR set, `docs_shot(page,
name)` also saves the README's screenshots (docs/screenshots) as DIR/name.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

TOP = Path(__file__).resolve().parents[2]
SCREENSHOTS = TOP / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 90_000  # JupyterLab's first load on 2 busy cores takes seconds, not minutes


def run_in_a_new_notebook(page, name: str, code: str):
    """In NAME's JupyterLab (the page is on its way there): a new Python 3 notebook
    from the launcher, CODE typed into its first cell and run as a person does.
    The cell's first output (a Playwright locator)."""
    page.wait_for_url(re.compile(rf"/user/{name}/lab"))
    launcher = page.locator(".jp-Launcher")
    expect(launcher).to_be_visible()
    launcher.locator('.jp-LauncherCard[data-category="Notebook"][title^="Python 3"]').click()
    notebook = page.locator(".jp-NotebookPanel:visible")
    expect(notebook).to_be_visible()
    # A cell run before the kernel is connected is not run at all: wait, as a person
    # does, until the status bar says the kernel is idle.
    expect(page.get_by_role("contentinfo").get_by_text(re.compile(r"Python 3.*\| Idle"))).to_be_visible()
    notebook.locator(".jp-Cell").first.locator(".cm-content").click()
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")
    return notebook.locator(".jp-OutputArea-output").first


@pytest.fixture(scope="module")
def chromium():
    """One chromium for the module. Without it (not installed), the test fails saying
    so: scripts/test installs it through scripts/host-tools, so a run that lacks it
    is broken, not a tier that may be skipped."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium (scripts/host-tools test)"
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        # --no-sandbox: chromium's sandbox needs user namespaces, and we run as root.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context (no cookies) and one page in it."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    # "Leave site? Changes you made may not be saved": a person says leave.
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield page
    finally:
        context.close()


def docs_shot(page, name: str) -> Path | None:
    """The README's screenshot `name`, when APPLIANCE_DOCS_SCREENSHOTS names a folder."""
    folder = os.environ.get("APPLIANCE_DOCS_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder).resolve() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def screenshot_path(nodeid: str) -> Path:
    """test-artifacts/screenshots/<test>.png, the test's id made a file name."""
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    module = Path(nodeid.split("::", 1)[0]).stem
    return SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}.{name}").strip("_") + ".png")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On the failure of a test that uses `page`: what the page showed, as a PNG."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if not report.failed or report.when not in ("setup", "call") or page is None:
        return
    path = screenshot_path(item.nodeid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        said = f"{path}\n(page URL: {page.url})"
    except Exception as e:  # a crashed browser: the failure itself still says what went wrong
        said = f"no screenshot: {type(e).__name__}: {e}"
    report.sections.append(("screenshot of the browser page", said))
