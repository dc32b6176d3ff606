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
* every maths element (``span.math``/``div.math``) was typeset by MathJax (holds an
  ``mjx-container``; MathJax is served from ``_static``) and no raw TeX (``\\(``, ``\\[``,
  ``$...\\cmd...$``) is left in the prose;

and, without a browser, over the HTML of every page: no warning text (``SomethingWarning:``),
no progress-bar redraws or terminal cursor codes, and no absolute path of the building machine
(the repository, the virtualenv, ``$HOME``, ``/work/``); and, once: ``search.html?q=...`` lists
results; screenshots of the landing page and of the
first page with a figure land in ``<site>/../screenshots/``.

Browser: Playwright (pinned in requirements.txt) driving an installed Chromium (no browser
download): ``$SAEBOOK_CHROMIUM``, else ``chromium``, ``chromium-browser`` or ``google-chrome``
on PATH.
"""

from __future__ import annotations

import functools
import html as html_lib
import http.server
import os
import re
import shutil
import sys
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
MATH_JS = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    const maths = [...document.querySelectorAll('span.math, div.math')];
    const prose = document.body.cloneNode(true);
    prose.querySelectorAll('pre, code, script, style, mjx-container, .math, svg')
        .forEach(e => e.remove());
    return [maths.length, maths.filter(m => m.querySelector('mjx-container')).length,
            prose.textContent];
}"""
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$|\$[^$\n]{0,200}\\[A-Za-z]+[^$\n]{0,200}\$")
WARNING_TEXT = re.compile(r"\b\w*Warning: |warnings\.warn\(")
PROGRESS_TEXT = re.compile(  # tqdm redraws; cursor-movement codes, raw or as text ("[A")
    r"\d{1,3}%\|[^|\n]*\|\s*\S+/\S+|\x1b\[|\[A(?=[\s\r]|$)|\d+(?:\.\d+)?it/s\]"
)


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
    math: tuple[int, int] = (0, 0)  # (maths elements, typeset ones)
    raw_tex: list[str] = field(default_factory=list)  # untypeset TeX left in the prose


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
    if 'class="math' in html:
        total, typeset, prose = page.evaluate(MATH_JS)
        report.math = (total, typeset)
        report.raw_tex = [m.group(0)[:80] for m in RAW_TEX.finditer(prose)]
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

    # only requests to other hosts are intercepted (the regex is matched in Playwright's
    # driver): the site's own requests load without a round trip through this process
    context.route(re.compile("^(?!" + re.escape(server) + ")"), route)
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


def test_maths_is_typeset(reports) -> None:
    with_maths = {p: r.math for p, r in reports.items() if r.math[0]}
    untypeset = {p: f"{total - done}/{total} maths elements not typeset"
                 for p, (total, done) in with_maths.items() if done != total}  # fmt: skip
    raw = {p: r.raw_tex for p, r in reports.items() if r.raw_tex}
    assert not untypeset and not raw, (
        f"MathJax did not typeset: {untypeset}; raw TeX in the text: {raw}. MathJax is served "
        "from _static/mathjax (book/_ext/saebook_site.py): is sphinx-mathjax-offline installed?"
    )
    if not with_maths:
        pytest.skip("no page of this site has maths")


def machine_paths() -> list[str]:
    """Absolute paths of the building machine that must not appear in a published page."""
    found = {str(ROOT), os.path.realpath(ROOT), sys.prefix, os.path.realpath(sys.prefix), "/work/"}
    home = os.path.expanduser("~")
    if home not in {"", "/", "~"}:
        found.add(home.rstrip("/") + "/")
    return sorted(p for p in found if len(p) > 1)


def page_text(html: str) -> str:
    """The text of an HTML page as a reader sees it (tags, scripts and styles removed)."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", "", html)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


def site_problems(site: Path) -> list[str]:
    """Warning text, progress-bar redraws and machine paths in the site's pages."""
    problems = []
    paths = machine_paths()
    for path in site_pages(site):
        html = (site / path).read_text(encoding="utf-8", errors="replace")
        text = page_text(html)
        for what, pattern in (("warning text", WARNING_TEXT), ("progress bar", PROGRESS_TEXT)):
            for match in list(pattern.finditer(text))[:3]:
                line = text[max(0, match.start() - 60) : match.end() + 60].replace("\n", " ")
                problems.append(f"{path}: {what}: ...{line.strip()}...")
        problems += [f"{path}: machine path {p!r}" for p in paths if p in html]
    return problems


def test_pages_show_no_warnings_progress_or_machine_paths(site_html) -> None:
    problems = site_problems(site_html)
    assert not problems, "\n".join(problems)


def test_site_problems_are_found(tmp_path) -> None:
    page = (
        f"<p>fine</p><pre>{sys.prefix}/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: "
        "IProgress not found</pre><pre>Training:  40%|####  | 2/5 [00:01&lt;00:01, 2.1it/s]"
        "</pre>"
    )
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    (tmp_path / "ok.html").write_text("<p>Warnings are errors; 40% of latents</p>", "utf-8")
    found = "\n".join(site_problems(tmp_path))
    assert "index.html: warning text" in found and "index.html: progress bar" in found
    assert f"index.html: machine path {sys.prefix!r}" in found and "ok.html" not in found


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
