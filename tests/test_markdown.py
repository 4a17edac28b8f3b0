"""Text from data is inert in the markdown the Prefect UI renders (flows/markdown.py), and every
artifact that shows such text goes through it: checked here by rendering the artifacts'
markdown with a CommonMark + GFM renderer and counting the links, images and HTML it makes.
(The real UI, in a browser: tests/test_e2e.py.)"""

from __future__ import annotations

from unittest import mock

import pytest

from flows import artifacts
from flows.markdown import code, link, text

HOSTILE = (
    "[Session expired: sign in](javascript:alert(document.domain)) "
    "![t](https:attacker.example) <img src=https://attacker.example/y.png> "
    "https://attacker.example/z www.attacker.example a@attacker.example | `x` *b* <!channel>\n"
    "# heading"
)


def render(markdown: str) -> str:
    """HTML as a CommonMark renderer with GFM tables makes it (raw HTML allowed)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def made(html: str, source: str) -> dict:
    """What the markdown made: links, images, raw HTML, and GFM autolinks, which marked (the
    UI's renderer) forms from `www.`, `https://` or `user@host` in the source text outside
    code spans."""
    import re

    source = re.sub(r"(`+) .*? \1", "", source)  # code spans
    source = re.sub(r"\]\(http[^ )]*\)", "](", source)  # the destinations of our own links
    return {
        "links": html.count("<a "),
        "images": html.count("<img"),
        "html": html.count("<script") + html.count("<!channel"),
        "autolinks": sum(s in source for s in ("www.attacker", "://attacker", "a@attacker")),
    }


@pytest.mark.parametrize("value", [HOSTILE, "n01440764", "tench, Tinca tinca", "C:\\x\\y.JPEG"])
def test_text_renders_as_exactly_what_it_says(value: str) -> None:
    html = render(text(value))
    assert made(html, text(value)) == {"links": 0, "images": 0, "html": 0, "autolinks": 0}, html
    shown = html.removeprefix("<p>").removesuffix("</p>\n")
    import html as entities

    assert entities.unescape(shown) == " ".join(value.splitlines())


def test_code_and_link() -> None:
    html = render(code("/data/`odd` name/x.JPEG"))
    assert "<code>/data/`odd` name/x.JPEG</code>" in html and "<a " not in html
    assert "<a " not in render(link("v1", "javascript:alert(1)"))
    html = render(link("[x](y)", "https://mlflow:5000/#/models/a b (c)/versions/1"))
    assert html.count("<a ") == 1 and 'href="https://mlflow:5000/#/models/a%20b%20%28c%29' in html


def _published(function, *args) -> list[str]:
    """Every markdown string (bodies, table cells, descriptions) the artifact calls received."""
    texts = []

    def keep(*call_args, **kwargs):
        for value in [*call_args, *kwargs.values()]:
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts.extend(v for row in value for v in row.values() if isinstance(v, str))

    def keep_link(url, link_text, **kwargs):  # Prefect shows it as this markdown
        texts.append(f"[{link_text}]({url})")
        keep(**kwargs)

    with (
        mock.patch.object(artifacts, "create_markdown_artifact", keep),
        mock.patch.object(artifacts, "create_table_artifact", keep),
        mock.patch.object(artifacts, "create_link_artifact", keep_link),
    ):
        function(*args)
    return texts


def hostile_run() -> dict:
    """The arguments of every publish_* call for a run whose data is hostile throughout: class
    names, paths, span names and reasons all HOSTILE."""
    metadata = {
        "inputs": {"train": 3, "validation": 1}, "records": {"train": 2, "validation": 1},
        "quarantined": {"train": 1, "validation": 0}, "reencoded": {"train": 0, "validation": 0},
        "shards": {"train": 1, "validation": 1}, "source": f"/data/{HOSTILE}",
        "num_classes": 2, "layout": "class_folders", "not_read": [f"spans/{HOSTILE}: no _SUCCESS"],
    }  # fmt: skip
    quarantine = [{"path": f"/data/{HOSTILE}.JPEG", "split": "train", "reason": HOSTILE}]
    drift = [{"span": HOSTILE, "feature": "label", "measure": "L-infinity", "threshold": 0.1,
              "value": 0.5, "drifted": True}]  # fmt: skip
    anomalies = [{"split": "train", "feature": HOSTILE, "problem": HOSTILE}]
    validation = {"passed": False, "anomalies": anomalies, "drift": drift,
                  "statistics_html": f"/w/{HOSTILE}.html"}  # fmt: skip
    worst = [{"name": HOSTILE, "accuracy": 0.1, "support": 5,
              "confused_with": [{"name": HOSTILE, "count": 3}]}]  # fmt: skip
    metrics = {"top1": 0.5, "top5": 0.9, "top5_k": 5, "count": 10, "worst_classes": worst,
               "figure": f"/w/{HOSTILE}.png"}  # fmt: skip
    gate = {"passed": False, "reason": f"refused: {HOSTILE}"}
    registered = {"version": "3", "model_name": f"darknet53-{HOSTILE}", "gate": gate,
                  "tracking_uri": "http://mlflow:5000"}  # fmt: skip
    report = {
        "failed": {"stage": "validate", "reason": HOSTILE, "hint": HOSTILE},
        "ingest": {"records": {"train": 2, "validation": 1}, "quarantined": 1, "reused": False},
        "decision": {"train": True, "reason": HOSTILE}, "validate": validation, "drift": drift,
        "evaluate": {"top1": 0.5, "top5": 0.9, "figure": f"/w/{HOSTILE}.png"}, "gate": gate,
        "registry": registered, "report_path": f"/w/{HOSTILE}/report.json",
        "train": {"mlflow_run_id": "R", "steps": 2, "precision": "float32", "resumed_from": 0},
        "links": {"statistics": "http://mlflow:5000/#/x", "curves": "javascript:alert(1)"},
    }  # fmt: skip
    return {
        "publish_ingest": [(metadata, quarantine)],
        "publish_validation": [(validation,)],
        "publish_evaluation": [(metrics, gate)],
        "publish_registration": [(registered, "http://mlflow:5000"),
                                 ({**registered, "version": None}, None)],
        "publish_summary": [(report, "http://mlflow:5000")],
    }  # fmt: skip


def publish_hostile_run() -> None:
    """Publishes hostile_run's artifacts from a flow run (for the browser test)."""
    from prefect import flow

    @flow(name="hostile-names")
    def hostile_names() -> None:
        for function, calls in hostile_run().items():
            for args in calls:
                getattr(artifacts, function)(*args)

    hostile_names()


def test_every_artifact_keeps_names_from_data_inert() -> None:
    """Class names, paths, span names and reasons of a run whose data is hostile throughout."""
    published = [
        markdown
        for function, calls in hostile_run().items()
        for args in calls
        for markdown in _published(getattr(artifacts, function), *args)
    ]
    assert sum("attacker" in t for t in published) >= 10  # the names are all there, as text
    for markdown in published:
        html = render(markdown)
        found = made(html, markdown)
        assert not (found["images"] or found["html"] or found["autolinks"]), (markdown, html)
        hrefs = [part.split('"', 1)[0] for part in html.split('href="')[1:]]
        assert all(h.startswith("http://mlflow:5000/") for h in hrefs), (markdown, hrefs)
