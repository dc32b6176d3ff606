"""Determinism: a chapter executed twice under the tiny profile shows the same numbers.

Each selected chapter is compared over two runs in fresh kernels, both started the way nbmake
runs chapters (tests/chapter_runner.py): the first is the run nbmake made in this session
(``_build/executed/``; run again here when it is missing or older than the chapter), the second
a rerun. Every numeric output is compared: ``text/plain`` outputs (tables, reprs,
glued values, whose mime type myst-nb prefixes), stdout, plotly figure data, and HTML-only
outputs. Numbers must be identical. Known non-numeric noise is masked before comparing:
random element ids (UUIDs, which plotly puts in its ``<div>``s) and wall-clock durations
(a number followed by a time unit, e.g. ``0.53 s``, ``12 it/s``). stderr (progress bars,
warnings) is not compared.

Where could torch on a CPU differ between two runs? Its CPU kernels are deterministic for
a fixed number of threads (chapters pin it with ``SAEBOOK_THREADS``; both runs inherit the
same value), and every chapter seeds its generators in ``saebook.setup()``. So no tolerance
is granted by default; a chapter that needs one goes into ``TOLERANCES`` with the reason.

Which chapters: ``SAEBOOK_DETERMINISM_CHAPTERS`` (comma-separated ``_toc.yml`` entries, or
``all``); by default two cheap ones, to bound CI time. The session summary prints
"determinism: N chapters identical on a second run".
"""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from chapter_runner import EXECUTED, fresh_execution, rerun
from test_chapters import chapters

ENV = "SAEBOOK_DETERMINISM_CHAPTERS"
# intro/01 reads the shipped SAEs; training/05 trains three SAEs from seeded initialisations
DEFAULT = ("book/intro/01_running_saes", "book/training/05_end_to_end_saes")

#: entry -> (relative tolerance, why). Empty: every chapter so far is bit-for-bit repeatable.
TOLERANCES: dict[str, tuple[float, str]] = {}

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
DURATION = re.compile(
    r"[-+]?\d+(?:\.\d+)?\s?(?:s|sec|secs|seconds|ms|min|minutes|it/s|s/it)\b", re.IGNORECASE
)


def selected(value: str | None = None) -> list[str]:
    """The chapters named by ``SAEBOOK_DETERMINISM_CHAPTERS`` (default: :data:`DEFAULT`)."""
    value = os.environ.get(ENV, "") if value is None else value
    value = value.strip()
    if not value:
        return list(DEFAULT)
    if value == "all":
        return chapters()
    names = [v.strip().removesuffix(".md") for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in chapters()]
    if unknown:
        raise ValueError(f"{ENV} must name executable chapters or 'all', got {unknown}")
    return names


def _mask(text: str) -> str:
    return DURATION.sub("<duration>", UUID.sub("<id>", text))


def _typed_array(value: dict) -> list[float]:
    """The numbers of a plotly typed array ``{"dtype": "f8", "bdata": base64, "shape": ...}``
    (plotly >= 6 sends numpy arrays this way instead of JSON lists)."""
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()


def _numbers_of(value: object) -> list[float]:
    """Every number in a JSON-like value (plotly figure data), in order."""
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        return [float(x) for x in _typed_array(value)]
    if isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        return []
    if isinstance(value, dict):
        return [n for k in sorted(value) for n in _numbers_of(value[k])]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers_of(v)]
    return []


def _text_record(where: str, text: str) -> tuple[str, str, list[float]]:
    masked = _mask(text)
    numbers = [float(m) for m in NUMBER.findall(masked)]
    return where, NUMBER.sub("#", masked), numbers


def numeric_outputs(nb) -> list[tuple[str, str, list[float]]]:
    """(where, text with numbers replaced by #, numbers) for every compared output."""
    records = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        # a cell's stdout is one text: the kernel splits it into stream messages by timing
        stdout = "".join(
            o.get("text", "")
            for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        )
        for k, out in enumerate(cell.get("outputs", [])):
            where = f"cell {index} output {k}"
            if out.get("output_type") == "stream":
                if out.get("name") == "stdout" and stdout:  # at the first stdout message
                    records.append(_text_record(f"cell {index} (stdout)", stdout))
                    stdout = ""
                continue
            data = out.get("data", {})
            for mime in sorted(data):
                value = data[mime]
                if mime.endswith("text/plain"):
                    records.append(_text_record(f"{where} ({mime})", str(value)))
                elif mime == "application/vnd.plotly.v1+json":
                    fig = value if isinstance(value, dict) else json.loads(value)
                    numbers = _numbers_of(fig.get("data", []))
                    records.append((f"{where} (plotly data)", "", numbers))
                elif mime == "text/html" and not any(
                    m.endswith("text/plain") or m == "application/vnd.plotly.v1+json" for m in data
                ):  # an HTML-only output; plotly's HTML twin of its JSON is skipped
                    records.append(_text_record(f"{where} (text/html)", str(value)))
    return records


def _same(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))


def first_difference(first, second, rtol: float = 0.0) -> str | None:
    """Where two runs' numeric outputs differ (the first place), or None if they agree."""
    if len(first) != len(second):
        return f"{len(first)} compared outputs in the first run, {len(second)} in the second"
    for (w1, s1, n1), (w2, s2, n2) in zip(first, second, strict=True):
        if w1 != w2 or s1 != s2:
            return f"{w1}: the text differs:\n  first:  {s1[:300]!r}\n  second: {s2[:300]!r}"
        if len(n1) != len(n2):
            return f"{w1}: {len(n1)} numbers in the first run, {len(n2)} in the second"
        for i, (a, b) in enumerate(zip(n1, n2, strict=True)):
            if not _same(a, b, rtol):
                return f"{w1}: number {i} is {a!r} in the first run and {b!r} in the second"
    return None


# --- unit tests of the comparison (fast) -----------------------------------------------------


def _nb(*outputs):
    import nbformat

    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("m"), cell])


def _plain(text):
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/plain": text}}  # fmt: skip


def test_comparison_finds_a_changed_number_and_ignores_noise():
    fig = {"data": [{"type": "bar", "x": [1, 2], "y": [0.5, 0.25]}], "layout": {}}
    one = _nb(
        _plain("loss 0.123 at step 10"),
        {"output_type": "stream", "name": "stdout", "text": "took 1.5 s, 30 it/s\n"},
        {"output_type": "stream", "name": "stderr", "text": "100%|###| 5/5 [00:01]\n"},
        {"output_type": "display_data", "metadata": {},
         "data": {"application/vnd.plotly.v1+json": fig, "text/html": "<div id='a'></div>"}},
    )  # fmt: skip
    records = numeric_outputs(one)
    assert records[0] == ("cell 1 output 0 (text/plain)", "loss # at step #", [0.123, 10.0])
    assert records[1][1] == "took <duration>, <duration>\n"  # durations masked
    assert records[2] == ("cell 1 output 3 (plotly data)", "", [1.0, 2.0, 0.5, 0.25])
    assert len(records) == 3  # no stderr, no HTML twin of the figure
    assert first_difference(records, numeric_outputs(one)) is None
    fig2 = {"data": [{"type": "bar", "x": [1, 2], "y": [0.5, 0.2500001]}], "layout": {}}
    two = _nb(
        _plain("loss 0.123 at step 10"),
        {"output_type": "stream", "name": "stdout", "text": "took 9.9 s, 3 it/s\n"},
        {"output_type": "stream", "name": "stderr", "text": "different progress\n"},
        {"output_type": "display_data", "metadata": {},
         "data": {"application/vnd.plotly.v1+json": fig2, "text/html": "<div></div>"}},
    )  # fmt: skip
    problem = first_difference(records, numeric_outputs(two))
    assert problem and "number 3 is 0.25" in problem and "0.2500001" in problem
    assert first_difference(records, numeric_outputs(two), rtol=1e-5) is None
    three = _nb(_plain("loss 0.124 at step 10"))
    assert "number 0 is 0.123" in first_difference(records[:1], numeric_outputs(three))
    four = _nb(_plain("gain 0.123 at step 10"))
    assert "text differs" in first_difference(records[:1], numeric_outputs(four))


def test_stdout_split_into_several_messages_compares_equal():
    whole = _nb({"output_type": "stream", "name": "stdout", "text": "a 1\nb 2\n"})
    split = _nb(
        {"output_type": "stream", "name": "stdout", "text": "a 1\n"},
        {"output_type": "stream", "name": "stdout", "text": "b 2\n"},
    )
    assert first_difference(numeric_outputs(whole), numeric_outputs(split)) is None
    other = _nb({"output_type": "stream", "name": "stdout", "text": "a 1\nb 3\n"})
    assert first_difference(numeric_outputs(whole), numeric_outputs(other)) is not None


def test_plotly_typed_arrays_are_decoded():
    import plotly.express as px
    import plotly.io as pio

    fig = px.line(x=[0, 1, 2], y=[0.5, 0.25, 1.0])
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    data = bundle["application/vnd.plotly.v1+json"]["data"]
    out = {"output_type": "display_data", "metadata": {}, "data": bundle}
    numbers = numeric_outputs(_nb(out))[0][2]
    assert isinstance(data[0]["y"], dict) and "bdata" in data[0]["y"]  # a typed array
    xy = [0.0, 1.0, 2.0, 0.5, 0.25, 1.0]  # x then y (keys in sorted order)
    assert any(numbers[i : i + 6] == xy for i in range(len(numbers))), numbers


def test_glued_values_and_uuids():
    glued = {"output_type": "display_data", "metadata": {"scrapbook": {"name": "x"}},
             "data": {"application/papermill.record/text/plain": "'0.731'"}}  # fmt: skip
    uid = "0b8e2f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    html = {"output_type": "display_data", "metadata": {},
            "data": {"text/html": f"<div id='{uid}'>7</div>"}}  # fmt: skip
    records = numeric_outputs(_nb(glued, html))
    assert records[0][2] == [0.731]
    assert records[1][1] == "<div id='<id>'>#</div>" and records[1][2] == [7.0]


def test_selection_reads_the_environment():
    assert selected("") == list(DEFAULT)
    assert selected("all") == chapters()
    assert selected(" book/intro/01_running_saes.md ") == ["book/intro/01_running_saes"]
    with pytest.raises(ValueError, match=f"{ENV} must name executable chapters"):
        selected("book/nope")


# --- the chapters, run twice -----------------------------------------------------------------


def _run_once(entry: str, attempt: str):
    result = rerun(entry)
    if result.error is not None:
        pytest.fail(f"{entry} failed on its {attempt} run:\n{result.error.trace}", pytrace=False)
    return result.nb


@pytest.mark.determinism
@pytest.mark.parametrize("entry", selected())
def test_chapter_is_deterministic(entry: str, record_property) -> None:
    import nbformat

    if fresh_execution(entry) is not None:  # nbmake's run of this session
        first = nbformat.read(EXECUTED / f"{entry}.ipynb", as_version=4)
    else:
        first = _run_once(entry, "first")
    runs = [numeric_outputs(first), numeric_outputs(_run_once(entry, "second"))]
    rtol, why = TOLERANCES.get(entry, (0.0, ""))
    problem = first_difference(*runs, rtol=rtol)
    record_property("determinism", "different" if problem else "identical")
    n_numbers = sum(len(r[2]) for r in runs[0])
    print(f"{entry}: {len(runs[0])} outputs, {n_numbers} numbers compared (rtol {rtol}) {why}")
    assert problem is None, f"{entry} is not deterministic: {problem}"
