"""The browser the console's tests drive (Debian's headless Chromium through Playwright), a
signed-in tab of it (`Console`), and the district most browser tests of import templates start
from: alpha on a real `rosterdrop serve`, set to custom import templates, a schools template
made from its Campuses.csv, its admin signed in. A pytest plugin (tests/conftest.py)."""

from dataclasses import dataclass
from pathlib import Path

import pytest
from web_fixtures import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# The README's pictures of the console, made again by every run (commit them when they change).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


class Console:
    """One signed-in browser tab."""

    def __init__(self, browser, base: str):
        self.context = browser.new_context(
            accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        self.page = self.context.new_page()
        self.base = base

    def sign_in(self, email: str, shot: str = "") -> None:
        self.page.goto(f"{self.base}/accounts/login/")
        self.page.fill("input[name=username]", email)
        self.page.fill("input[name=password]", PASSWORD)
        if shot:
            self.shot(shot)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def go(self, path: str, shot: str = "") -> None:
        self.page.goto(self.base + path)
        if shot:
            self.shot(shot)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def readme_shot(self, name: str, down_to: str = "") -> None:
        """The page as the README shows it: its first screen, or from the top down to the end
        of the element `down_to` (at most 2,000 pixels)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = self.page.viewport_size["height"]
        if down_to:
            box = self.page.locator(down_to).bounding_box()  # the page is at its top
            height = min(int(box["y"] + box["height"]) + 16, 2000)
        clip = {"x": 0, "y": 0, "width": self.page.viewport_size["width"], "height": height}
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True, clip=clip)

    def upload(self, slug: str, folder: Path) -> None:
        self.go(f"/d/{slug}/")
        self.page.set_input_files("input[name=files]", sorted(str(p) for p in folder.iterdir()))
        self.page.click("text=Upload and import")
        self.page.wait_for_url("**/syncs/*/")

    def wait_for_status(self, status: str) -> None:
        """The sync page polls with htmx while the import runs, then reloads once."""
        try:
            self.page.wait_for_selector(f"#sync-status[data-status={status}]", timeout=60_000)
        except Exception:
            self.shot("failed-wait")
            raise AssertionError(self.page.inner_text("main")[:2000]) from None


# A custom district's schools, as its SIS exports them (semicolons, its own column names).
SCHOOLS = "Campus ID;School Name\n001;Escuela José Martí\n"


@dataclass
class CustomDistrict:
    """District alpha of `server`, on custom import templates, its admin signed in to `web`;
    `export` is the SIS's export folder, holding Campuses.csv (the schools template's file)."""

    server: object
    web: Console
    export: Path


@pytest.fixture
def custom_district(browser, tmp_path):
    """Make a real serve's district alpha a custom-templates district with a schools template,
    and sign its admin in: `custom_district(server)`."""

    def make(server) -> CustomDistrict:
        server.cli(
            "shell",
            "-c",
            "from rosterdrop.districts.models import District;"
            "District.objects.filter(slug='alpha').update(format='custom')",
        )
        server.cli("user", "add", "data@alpha.test", "--district", "alpha", "--password-stdin",
                   input=PASSWORD + "\n")  # fmt: skip
        export = tmp_path / "export"
        export.mkdir()
        (export / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
        server.cli("template", "add", str(export / "Campuses.csv"), "--district", "alpha",
                   "--kind", "schools", "--delimiter", ";")  # fmt: skip
        web = Console(browser, f"http://127.0.0.1:{server.web_port}")
        web.sign_in("data@alpha.test")
        return CustomDistrict(server, web, export)

    return make
