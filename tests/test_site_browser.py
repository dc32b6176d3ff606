"""Open every page of a built site in headless Chromium and check what a reader would see.

Which site: the ``site_html`` fixture (tests/conftest.py): ``$SAEBOOK_SITE_HTML`` if set (e.g.
``_build/html`` after ``make book``), else the site that tests/test_site.py assembles from the
chapters this session executed, so ``make test`` checks the whole book in a browser. Without a
site every test is skipped with the reason; with ``CI=true`` a missing browser fails instead of
skipping.

The site is served from 127.0.0.1 and the browser may load nothing else: requests to other
hosts are aborted and listed, so the pages must work offline (plotly.js comes from
``_static``). Checks, for every page:

* no JavaScript error (uncaught exceptions, ``console.error``, failed local resources; a
  failed *external* resource is only reported);
* every plotly figure drew its ``.main-svg``; every circuitsvis widget rendered children;
* every internal ``href`` resolves to a file of the site, and its ``#fragment`` to an id
  on the target page;

and, once: ``search.html?q=...`` lists results; screenshots of the landing page and of the
first page with a figure land in ``<site>/../screenshots/``.

Browser: Playwright (pinned in requirements.txt) driving an installed Chromium (no browser
download): ``$SAEBOOK_CHROMIUM``, else ``chromium``, ``chromium-browser`` or ``google-chrome``
on PATH.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEARCH_QUERY = os.environ.get("SAEBOOK_SEARCH_QUERY", "sparse")
PLOTLY_DIV_CLASS = "plotly-graph-div"  # saebook.display.PLOTLY_DIV_CLASS
SKIP_DIRS = {"_static", "_sources", "_images", "jupyter_execute", "reports"}
LOAD_TIMEOUT_MS = 60_000  # a page with several figures takes seconds on a busy 2-core machine
DRAWN_JS = """cls => [...document.getElementsByClassName(cls)]
    .every(d => d.querySelector('.main-svg'))"""
REFRESH_RE = re.compile(
    r"""<meta\s+http-equiv=["']refresh["']\s+content=["']\d+;\s*url=([^"']+)["']""", re.I
)
ID_RE = re.compile(r"""\bid\s*=\s*["']([^"']+)["']""")


def _chromium() -> str | None:
    candidates = [os.environ.get("SAEBOOK_CHROMIUM", "")]
    candidates += [shutil.which(n) or "" for n in ("chromium", "chromium-browser")]
    candidates += [shutil.which(n) or "" for n in ("google-chrome", "google-chrome-stable")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def site_pages(site: Path) -> list[str]:
    """Paths (relative, posix) of the site's HTML pages, outside asset folders."""
    return sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not SKIP_DIRS.intersection(p.relative_to(site).parts[:-1])
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def server(site_html: Path):
    handler = functools.partial(_QuietHandler, directory=str(site_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements.txt)")
    executable = _chromium()
    if executable is None:
        _unavailable("no Chromium found (set SAEBOOK_CHROMIUM or install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@dataclass
class PageReport:
    """What one page showed in the browser."""

    path: str
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)  # aborted requests to other hosts
    plotly: tuple[int, int] = (0, 0)  # (figure divs, figures with a .main-svg)
    # circuitsvis widget id, rendered child elements (its own <script> does not count: the
    # widget's `<div ... />` is not self-closing in HTML, so the script lands inside it)
    widgets: list[tuple[str, int]] = field(default_factory=list)
    hrefs: list[str] = field(default_factory=list)  # absolute same-origin hrefs


def _visit(context, site: Path, base: str, path: str) -> PageReport:
    report = PageReport(path)
    html = (site / path).read_text(encoding="utf-8", errors="replace")
    redirect = REFRESH_RE.search(html)
    if redirect:  # jupyter-book's root index.html only forwards to the root page
        report.hrefs = [urljoin(f"{base}/{path}", redirect.group(1).strip())]
        return report
    page = context.new_page()

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if where and not where.startswith(base) and msg.text.startswith("Failed to load"):
            return  # an external resource aborted on purpose; listed in report.external
        report.errors.append(f"console.error: {msg.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: report.errors.append(f"uncaught: {exc}"))

    def on_failed(request) -> None:
        if request.url.startswith(base):
            report.errors.append(f"failed to load {request.url}: {request.failure}")

    page.on("requestfailed", on_failed)
    page.goto(f"{base}/{path}", wait_until="load", timeout=LOAD_TIMEOUT_MS)
    if PLOTLY_DIV_CLASS in html:
        try:  # Plotly.newPlot draws before "load"; a little slack for slow machines
            page.wait_for_function(DRAWN_JS, arg=PLOTLY_DIV_CLASS, timeout=5_000)
        except Exception:  # playwright's TimeoutError: counted as undrawn below
            pass
        report.plotly = page.evaluate(
            """cls => { const divs = [...document.getElementsByClassName(cls)];
                return [divs.length, divs.filter(d => d.querySelector('.main-svg')).length]; }""",
            PLOTLY_DIV_CLASS,
        )
    if "circuits-vis-" in html:
        page.wait_for_timeout(1000)  # widgets render from a module script
        report.widgets = [
            tuple(w)
            for w in page.evaluate(
                """() => [...document.querySelectorAll('[id^="circuits-vis-"]')]
                    .map(d => [d.id, [...d.children]
                        .filter(c => !['SCRIPT', 'STYLE'].includes(c.tagName)).length])"""
            )
        ]
    report.hrefs = page.evaluate(  # getAttribute: an SVG <a>'s .href is not a string
        """base => [...document.querySelectorAll('a[href]')]
            .map(a => new URL(a.getAttribute('href'), document.baseURI).href)
            .filter(h => h.startsWith(base))""",
        base,
    )
    page.close()
    return report


@dataclass
class Offline:
    """A browser context that may load only the local site; other requests are aborted."""

    context: Any
    external: list[str]


@pytest.fixture(scope="module")
def offline(browser, server):
    external: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(route_obj) -> None:
        if route_obj.request.url.startswith(server):
            route_obj.continue_()
        else:
            external.append(route_obj.request.url)
            route_obj.abort()

    context.route("**/*", route)
    yield Offline(context, external)
    context.close()


@pytest.fixture(scope="module")
def reports(offline, server, site_html) -> dict[str, PageReport]:
    found = {}
    for path in site_pages(site_html):
        before = len(offline.external)
        found[path] = _visit(offline.context, site_html, server, path)
        found[path].external = offline.external[before:]
    return found


def test_site_has_pages(site_html) -> None:
    pages = site_pages(site_html)
    assert "index.html" in pages and "search.html" in pages, pages[:10]
    assert len(pages) >= 3, pages


def test_no_javascript_errors(reports) -> None:
    problems = {p: r.errors for p, r in reports.items() if r.errors}
    assert not problems, "\n".join(f"{p}:\n  " + "\n  ".join(e) for p, e in problems.items())
    external = sorted({u for r in reports.values() for u in r.external})
    if external:
        print(f"external resources not loaded (offline test): {external}")


def test_plotly_figures_render(reports) -> None:
    with_figures = {p: r.plotly for p, r in reports.items() if r.plotly[0]}
    broken = {
        p: f"{drawn}/{total} figures drawn"
        for p, (total, drawn) in with_figures.items()
        if drawn != total
    }
    assert not broken, broken
    if not with_figures:
        pytest.skip("no page of this site has a plotly figure")


def test_circuitsvis_widgets_render(reports) -> None:
    widgets = {p: r.widgets for p, r in reports.items() if r.widgets}
    if not widgets:
        pytest.skip("no page of this site has a circuitsvis widget")
    empty = {p: [w for w, children in ws if children == 0] for p, ws in widgets.items()}
    empty = {p: ws for p, ws in empty.items() if ws}
    assert not empty, (
        f"circuitsvis widgets rendered nothing: {empty}. If their script imports the bundle "
        "from a CDN, it cannot load offline: serve circuitsvis' bundle from _static."
    )


def _target(site: Path, base: str, href: str) -> tuple[Path, str]:
    parts = urlsplit(href[len(base) :])
    path = site / unquote(parts.path).lstrip("/")
    if path.is_dir() or parts.path.endswith("/"):
        path = path / "index.html"
    return path, unquote(parts.fragment)


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    return frozenset(ID_RE.findall(path.read_text(encoding="utf-8", errors="replace")))


def test_internal_links_resolve(reports, server, site_html) -> None:
    broken = []
    for page, report in reports.items():
        for href in report.hrefs:
            target, fragment = _target(site_html, server, href)
            if not target.is_file():
                broken.append(f"{page}: {href} (no file {target.relative_to(site_html)})")
            elif fragment and target.suffix == ".html" and fragment not in _ids(target):
                broken.append(f"{page}: {href} (no id {fragment!r} in the target)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert sum(len(r.hrefs) for r in reports.values()) > len(reports), "too few links found"


def test_search_finds_pages(offline, server, site_html) -> None:
    page = offline.context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/search.html?q={SEARCH_QUERY}", wait_until="load", timeout=LOAD_TIMEOUT_MS)
    results = page.locator("#search-results ul.search li")
    try:
        results.first.wait_for(timeout=20_000)
    except Exception as exc:  # playwright's TimeoutError
        summary = (
            page.locator("#search-results").inner_text()
            if page.locator("#search-results").count()
            else "(no #search-results element)"
        )
        pytest.fail(f"search for {SEARCH_QUERY!r} listed nothing: {summary} ({exc})")
    hrefs = results.locator("a").evaluate_all("as => as.map(a => a.href)")
    page.close()
    assert not errors, errors
    assert hrefs, f"search results for {SEARCH_QUERY!r} have no links"
    for href in hrefs:
        target, _ = _target(site_html, server, href)
        assert target.is_file(), f"search result {href} points at no page"


def test_screenshots(offline, server, reports, site_html) -> None:
    out = site_html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    landing = next((p for p in ("book/index.html", "index.html") if p in reports), "index.html")
    figure_page = next((p for p, r in reports.items() if r.plotly[0]), None)
    chapter = figure_page or next(p for p in reports if p.startswith("book/") and p != landing)
    page = offline.context.new_page()
    saved = []
    for path in (landing, chapter):
        page.goto(f"{server}/{path}", wait_until="load", timeout=LOAD_TIMEOUT_MS)
        if path == figure_page:
            page.locator(f".{PLOTLY_DIV_CLASS}").first.scroll_into_view_if_needed()
        target = out / (Path(path).with_suffix("").as_posix().replace("/", "__") + ".png")
        page.screenshot(path=str(target))
        saved.append(target)
    page.close()
    for target in saved:
        assert target.stat().st_size > 10_000, f"{target} looks empty"
