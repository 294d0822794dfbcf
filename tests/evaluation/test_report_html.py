"""metrics/report.html on a synthetic but plausible run (the default run's documented figures, pairs cut from
Python documentation): self-contained, ordered as the issue asks, run text escaped; then opened in Debian's
headless chromium: every image decodes, no console error, and a screenshot is saved
(`HUMPBACK_REPORT_SCREENSHOT=docs/report-html.png` writes the one docs/export.md shows)."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from humpback.storage.records import write_json, write_jsonl
from tests.conftest import report_args, write_dag_metrics

HOSTILE = '<img src="https://tracker.example/pixel.png" onerror="alert(1)"><script>alert(2)</script>'
SEGMENTS = [  # (header, segment, instruction the backward model wrote, pmi score)
    (
        "Reading and Writing Files",
        (
            "open() returns a file object, and is most commonly used with two positional "
            "arguments and one keyword argument: open(filename, mode, encoding=None). It is good practice to use the "
            "with keyword when dealing with file objects: the file is properly closed after its suite finishes."
        ),
        "How do I open a file in Python and make sure it gets closed?",
        41.7,
    ),
    (
        "Generators",
        (
            "Generators are a simple and powerful tool for creating iterators. They are written like "
            "regular functions but use the yield statement whenever they want to return data. Each time next() is "
            "called on it, the generator resumes where it left off."
        ),
        ("What is a generator in Python and how does it work?"),
        33.2,
    ),
    (
        "The import system",
        (
            "Python code in one module gains access to the code in another module by the process of "
            "importing it. The import statement is the most common way of invoking the import machinery."
        ),
        "Explain how one module can use code from another module.",
        18.4,
    ),
    (
        "Dictionaries",
        (
            "It is best to think of a dictionary as a set of key: value pairs, with the requirement that "
            "the keys are unique (within one dictionary)."
        ),
        "What is a dictionary?",
        10.6,
    ),
    (
        "Navigation",
        "index | modules | next | previous | Python » 3.11 Documentation » The Python Tutorial",
        "Write a navigation bar.",
        7.9,
    ),
    (
        "Copyright",
        (
            "Copyright © 2001-2023, Python Software Foundation. This page is licensed under the Python "
            "Software Foundation License Version 2."
        ),
        "Who owns the copyright?",
        2.3,
    ),
    # crawled markup, the lowest-scored pair: shown on the page as text, never run or loaded
    (
        "Footnotes",
        "[1] In fact, call by object reference would be a better description. " + HOSTILE,
        "Give a footnote.",
        -25.0,
    ),
]
FILLER = [
    (
        "What does the break statement do?",
        ("The break statement breaks out of the innermost enclosing for or while loop."),
    ),
    ("Summarise this section.", "See also: the glossary entry for iterable."),
    (
        "How do I format a number with two decimals?",
        (
            "Formatted string literals let you include the value of "
            "Python expressions inside a string by prefixing it with f."
        ),
    ),
    (
        "What is pass for?",
        (
            "The pass statement does nothing. It can be used when a statement is required "
            "syntactically but the program requires no action."
        ),
    ),
    ("Write a title.", "Table of Contents"),
    (
        "What happens when an exception is not handled?",
        (
            "If an exception occurs which does not match the "
            "exception named in the except clause, it is passed on to outer try statements; if no handler is found, it "
            "is an unhandled exception and execution stops with an error message."
        ),
    ),
]
PROMPTS = [
    (
        "Compose an engaging travel blog post about a recent trip to Hawaii.",
        "Hawaii is a beautiful place. I went there. It was nice and sunny.",
        (
            "Aloha from Maui! The first morning I watched the sun rise over Haleakalā's crater, then drove the "
            "Road to Hana, stopping at waterfalls and banana-bread stands along the way."
        ),
    ),
    (
        "How do I reverse a list in Python?",
        "Use reverse.",
        "Call `my_list.reverse()` to reverse it in place, or use `my_list[::-1]` for a reversed copy.",
    ),
    (
        "What is the difference between a list and a tuple?",
        "A list is a list and a tuple is a tuple.",
        (
            "A list is mutable (you can add, remove or change items); a tuple is immutable, so it can be a "
            "dictionary key. Use a tuple for a fixed record, a list for a collection that changes."
        ),
    ),
]


def _likelihood(path: Path, name: str, shift: float, rng: random.Random) -> str:
    def instrument(n: int, offset: float):
        items = [
            {"id": f"q{i}", "logprob": -2.0 + 0.3 * ((i * 7) % 11) / 11 + offset + rng.gauss(0, 0.008)}
            for i in range(n)
        ]
        return {"n": n, "mean": sum(r["logprob"] for r in items) / n, "items": items}

    write_json(
        path,
        {
            "model": name,
            "instruments": {"loglik_other": instrument(87, shift), "loglik_seed": instrument(20, 1.5 * shift)},
        },
    )
    return str(path)


def synthetic_run(root: Path) -> list[str]:
    """The report stage's inputs for a plausible run; returns its arguments."""
    from humpback.curation.selection import plot_histogram, selection_metrics

    metrics = root / "metrics"
    write_dag_metrics(metrics)
    write_json(metrics / "prepare_seed.json", {"read": 61, "kept": 41, "dropped": {"too_long": 0, "duplicate": 0}})
    write_json(
        metrics / "prepare_web.json", {"read": 1510, "kept": 1021, "dropped": {"too_short": 402, "navigation": 87}}
    )
    write_json(metrics / "sample_web.json", {"read": 1021, "kept": 64, "dropped": {"not_sampled": 957}})
    for role, (seed, web, loss) in {"m0": (41, 0, 2.31), "m1": (41, 18, 2.27), "m2": (41, 17, 2.26)}.items():
        write_json(
            metrics / "train" / f"{role}.json",
            {
                "examples": seed + web,
                "examples_seed": seed,
                "examples_augmented": web,
                "steps": (seed + web) // 8,
                "final_loss": loss,
                "trained_tokens": 9000 + 200 * web,
                "seconds": 140.0 + 3 * web,
            },
        )
    write_json(
        metrics / "evaluate.json",
        {
            "reference": "base",
            "judge": {"kind": "local", "model": "models/base", "annotator": "pmi"},
            "models": {
                m: {
                    "win_rate": w,
                    "standard_error": 11.0,
                    "n": 16,
                    "avg_length": 610.0,
                    "order_agreement": 1.0,
                    "position_bias": False,
                    "unparsed": 0,
                }
                for m, w in (("m0", 50.0), ("m1", 53.1), ("m2", 56.2))
            },
            "length_controlled_reason": None,
            "head_to_head": {},
            "indomain": {
                "reference": "human answers (held-out seed pairs)",
                "models": {},
                "head_to_head": {
                    "m2_vs_m0": {"difference": 5.0, "ci_low": -15.0, "ci_high": 25.0, "n": 20},
                    "m1_vs_m0": {"difference": 2.5, "ci_low": -17.5, "ci_high": 22.5, "n": 20},
                    "m2_vs_m1": {"difference": 0.0, "ci_low": -20.0, "ci_high": 20.0, "n": 20},
                },
            },
        },
    )
    rng = random.Random(0)
    likelihood = [
        _likelihood(root / "likelihood" / f"{m}.json", m, s, rng)
        for m, s in (("m0", 0.0), ("m1", 0.004), ("m2", 0.0089))
    ]
    args = report_args(root, metrics, likelihood=likelihood, html=root / "report.html")
    scored_files, selected_files, histograms = [], [], []
    for iteration in (1, 2):
        scored = [
            {
                "id": f"a{i}",
                "segment_id": f"web-{i}",
                "instruction": instruction,
                "output": text,
                "score": score + (iteration - 1) * rng.uniform(-4, 4),
                "score_argmax": None,
                "probs": None,
                "raw": None,
                "parsed": True,
            }
            for i, (_, text, instruction, score) in enumerate(SEGMENTS)
        ]
        scored += [
            {
                "id": f"b{i}",
                "segment_id": f"web-b{i}",
                "instruction": FILLER[i % len(FILLER)][0],
                "output": FILLER[i % len(FILLER)][1],
                "score": rng.gauss(4, 6),
                "score_argmax": None,
                "probs": None,
                "raw": None,
                "parsed": True,
            }
            for i in range(57)
        ]
        selected = [r for r in scored if r["score"] >= 10.0]
        select = {"iteration": iteration, **selection_metrics(scored, selected, "pmi", 10.0, 0)}
        if iteration == 2:
            select["overlap_with_previous"] = {
                "shared": 15,
                "only_this": 2,
                "only_previous": 3,
                "jaccard": 0.75,
                "identical": False,
            }
        write_json(metrics / "select" / f"{iteration}.json", select)
        plot_histogram(scored, select, iteration, str(metrics / "select" / f"hist_{iteration}.png"))
        for rows, name, files in ((scored, "scored", scored_files), (selected, "selected", selected_files)):
            write_jsonl(root / "curated" / str(iteration) / f"{name}.jsonl", rows)
            files.append(str(root / "curated" / str(iteration) / f"{name}.jsonl"))
        histograms.append(str(metrics / "select" / f"hist_{iteration}.png"))
    responses = []
    for column, name in ((1, "m0"), (2, "m2")):
        write_json(
            root / "responses" / f"{name}.json",
            [
                {"instruction": p[0], "output": p[column], "generator": name, "dataset": "mt-bench", "id": f"e{i}"}
                for i, p in enumerate(PROMPTS)
            ],
        )
        responses.append(str(root / "responses" / f"{name}.json"))
    return [
        *args,
        "--scored",
        *scored_files,
        "--selected",
        *selected_files,
        "--histograms",
        *histograms,
        "--responses",
        *responses,
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from stages.report import main

    root = tmp_path_factory.mktemp("run")
    assert main(synthetic_run(root)) == 0
    return root / "report.html"


def test_the_page_is_self_contained_in_the_asked_order_and_escapes_run_text(report):
    page = report.read_text()
    images = re.findall(r"<img [^>]*>", page)
    assert len(images) == 3  # the paired differences and the two histograms: the hostile <img> is text
    for tag in images:
        src = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
        assert base64.b64decode(src)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    order = [
        page.index(s)
        for s in (
            'alt="paired differences',
            "<h2>The answers</h2>",
            'id="curation"',
            'id="examples"',
            'id="side-by-side"',
            "<h2>Data</h2>",
        )
    ]
    assert order == sorted(order)
    assert "Does M2 beat M0 on other-source human answers" in page


def test_the_examples_are_the_extremes_of_kept_and_dropped_with_score_and_segment(report):
    from humpback.storage.records import read_jsonl

    page = report.read_text()
    iteration_1 = page[page.index("<h3>Iteration 1</h3>") : page.index("<h3>Iteration 2</h3>")]
    rows = re.findall(r'<tr><td class="(kept|dropped)">([^<]+)</td><td>([^<]+)</td>', iteration_1)
    scored = sorted(r["score"] for r in read_jsonl(report.parent / "curated" / "1" / "scored.jsonl"))
    kept, dropped = [s for s in scored if s >= 10.0], [s for s in scored if s < 10.0]
    expected = (
        [("kept", "highest-scored kept", s) for s in kept[::-1][:2]]
        + [("kept", "lowest-scored kept", s) for s in kept[:2]]
        + [("dropped", "highest-scored dropped", s) for s in dropped[::-1][:2]]
        + [("dropped", "lowest-scored dropped", s) for s in dropped[:2]]
    )
    assert rows == [(k, which, f"{s:.4g}") for k, which, s in expected]
    assert rows[0][2] == "41.7" and "open() returns a file object" in iteration_1 and "segment web-0" in iteration_1
    side = page[page.index('id="side-by-side"') :]
    assert "<th>M0</th><th>M2</th>" in side and "Aloha from Maui!" in side and "Use reverse." in side


class Chromium:
    """Debian's headless chromium driven through its own DevTools protocol on a pipe (`--remote-debugging-pipe`:
    JSON messages ending in NUL, the browser reading fd 3 and writing fd 4), so the test needs no Python package
    the locks lack. Missing chromium skips the test locally and fails it in CI, whose set-up installs it."""

    def __init__(self, width: int = 1200, height: int = 900):
        binary = shutil.which("chromium")
        if not binary:
            (pytest.fail if os.environ.get("CI") else pytest.skip)("chromium not installed: `make test-tools`")
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # bash puts the pipes at the browser's fds 3 (it reads what we write) and 4 (it writes what we read); their
        # own numbers are moved above 9 first, so the moves never overwrite one another
        to_browser, from_browser = (self._above_9(fd) for fd in (to_browser, from_browser))
        wire = f'exec "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                wire,
                "bash",
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                "--no-first-run",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events, self.session = b"", 0, [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _above_9(fd: int) -> int:
        import fcntl

        moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return moved

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 16)
            assert chunk, "chromium closed its DevTools pipe"
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply["error"]
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._message())

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (blocked loads, CSP violations)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
            elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(str(p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"]["text"])
        return out

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._out)
        os.close(self._in)


def open_page(path: Path, screenshot: Path | None = None) -> tuple[list, list[str]]:
    """Load a page in chromium: (every <img>'s [alt, complete, naturalWidth], the errors it logged); optionally
    save a screenshot of its top (up to 2600 px)."""
    browser = Chromium()
    try:
        browser.call("Page.navigate", url=path.as_uri())
        browser.wait_for("Page.loadEventFired")
        images = browser.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        if screenshot is not None:
            height = min(browser.evaluate("document.documentElement.scrollHeight"), 2600)
            browser.call(
                "Emulation.setDeviceMetricsOverride", width=1200, height=height, deviceScaleFactor=1, mobile=False
            )
            png = browser.call("Page.captureScreenshot", format="png")["data"]
            screenshot.write_bytes(base64.b64decode(png))
        return images, browser.errors()
    finally:
        browser.close()


def test_the_browser_check_sees_a_broken_image_and_a_blocked_load(report, tmp_path):
    page = report.read_text().replace("base64,iVBOR", "base64,AAAA", 1)
    bad = tmp_path / "bad.html"
    bad.write_text(page.replace("</main>", '<img alt="remote" src="https://example.invalid/x.png"></main>'))
    images, errors = open_page(bad)
    assert [width for _, _, width in images].count(0) == 2 and len(errors) >= 2, (images, errors)


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    shot = Path(os.environ.get("HUMPBACK_REPORT_SCREENSHOT") or tmp_path / "report.png")
    images, errors = open_page(report, shot)
    assert len(images) == 3 and all(complete and width > 0 for _, complete, width in images), images
    assert not errors, errors
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
