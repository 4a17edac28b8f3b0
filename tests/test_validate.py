"""TFDV validation: clean data passes; schema violations and count mismatches fail readably."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.ingest.images import to_stored_image
from components.ingest.records import make_example, tfrecord_frame
from components.validate import ValidateConfig, ValidationFailed, format_table, validate
from tests.conftest import check_events, jpeg_bytes, make_class_folders, pattern_image

pytestmark = pytest.mark.integration


def test_clean_data_passes(ingested: Path, tmp_path: Path) -> None:
    reported = []
    report = validate(ValidateConfig(data_dir=str(ingested), output=str(tmp_path)), reported.append)
    messages = check_events(reported, "validate")
    assert messages[0] == "computing TFDV statistics for train (36 records)"
    # one span: no drift to measure; its validation images against its training images: skew
    assert messages[-1].startswith(
        "no anomalies; 0 of 4 drift/skew distances past their thresholds; statistics page: "
    )
    assert {(r["kind"], r["feature"]) for r in report["drift"]} == {
        ("skew", f) for f in ("height", "img_format", "label", "width")
    }
    assert report["passed"] and report["splits"]["train"] == {"examples": 36, "expected": 36}
    assert (tmp_path / "schema.pbtxt").exists()
    assert next((tmp_path / "statistics").glob("*/train.stats.tfrecord"), None)


def test_out_of_domain_label_and_count_mismatch_fail(ingested: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(ingested, data)
    stored = to_stored_image(jpeg_bytes(pattern_image(0, 0)))
    bad = make_example(stored, 7, "x", "x.JPEG", [])  # label 7 of 3 classes
    with (data / "train-00000-of-00002").open("ab") as handle:
        handle.write(tfrecord_frame(bad))
    with pytest.raises(ValidationFailed) as failure:
        validate(ValidateConfig(data_dir=str(data), output=str(tmp_path / "v")))
    rows = failure.value.anomalies
    assert {"train"} == {r["split"] for r in rows}
    assert any(r["feature"] == "label" for r in rows)
    assert any(r["problem"] == "record count" and "37" in r["detail"] for r in rows)
    assert "label" in str(failure.value) and "record count" in str(failure.value)
    saved = json.loads((tmp_path / "v" / "anomalies.json").read_text())
    assert not saved["passed"] and len(saved["anomalies"]) == len(rows)


def test_table_is_readable() -> None:
    table = format_table(
        [
            {
                "split": "train",
                "feature": "label",
                "problem": "Out-of-range values",
                "detail": "Unexpectedly large value: 7.",
            }
        ]
    )
    header, rule, row = table.splitlines()
    assert header.split() == ["split", "feature", "problem", "detail"]
    assert row.startswith("train  label")


def test_statistics_use_ingestion_runner_options_except_on_dask() -> None:
    from components.validate import statistics_beam_args

    said: list[dict] = []
    flink = ["--runner=FlinkRunner", "--flink_master=host:8081"]
    assert statistics_beam_args(flink, said.append) == flink
    local = statistics_beam_args([], said.append)
    assert local[0] == "--runner=FnApiRunner" and not said
    dask = ["--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:8786"]
    assert statistics_beam_args(dask, said.append) == local
    assert said and "DaskRunner" in said[0]["message"]


def _span(source: Path, name: str, classes: int, complete: bool = True) -> Path:
    folder = make_class_folders(source / "spans" / name, classes=3)
    for label in range(classes, 3):  # a span that brings fewer classes: its images go
        for split in ("train", "val"):
            shutil.rmtree(folder / split / f"n0{label:07d}")
    if complete:
        (folder / "_SUCCESS").write_text("")
    return folder


def test_a_span_that_drifts_stops_validation_unless_accepted(tmp_path: Path) -> None:
    """Span 02 holds one class only: its label mix moved by 2/3 against span 01 (L-infinity,
    threshold 0.1 in the schema). Statistics are counted once per span and kept with it."""
    from components.ingest import IngestConfig, run_ingest
    from components.validate import DriftDetected

    source = tmp_path / "source"
    _span(source, "01", classes=3)
    _span(source, "02", classes=1, complete=False)  # still being copied: not read
    data = tmp_path / "data"
    config = IngestConfig(source=str(source), output=str(data))
    first = run_ingest(config)
    assert [s["name"] for s in first["spans"]] == ["01"] and first["converted_spans"] == ["01"]
    kept = {p: p.read_bytes() for p in (data / "spans" / "01").iterdir() if p.is_file()}
    (source / "spans" / "02" / "_SUCCESS").write_text("")  # copied: span 02 arrives
    _span(source, "03", classes=3, complete=False)
    metadata = run_ingest(config)
    assert [s["name"] for s in metadata["spans"]] == ["01", "02"]
    assert metadata["converted_spans"] == ["02"]  # span 01 reused, byte for byte
    assert {p: p.read_bytes() for p in (data / "spans" / "01").iterdir() if p.is_file()} == kept
    assert (data / "train-00001-of-00002").resolve().parent == data / "spans" / "02"
    assert metadata["records"] == {"train": 32, "validation": 12}
    assert any("03" in line and "_SUCCESS" in line for line in metadata["not_read"])
    # A marker missing for a moment (being written again) leaves span 02 out of the view, and
    # never throws its converted shards away: only a span gone from the source loses them.
    marker = source / "spans" / "02" / "_SUCCESS"
    marker.unlink()
    without = run_ingest(config)
    assert [s["name"] for s in without["spans"]] == ["01"]
    assert list((data / "spans" / "02").glob("train-*-of-*"))
    marker.write_text("")
    metadata = run_ingest(config)
    assert [s["name"] for s in metadata["spans"]] == ["01", "02"]

    config = ValidateConfig(data_dir=str(data), output=str(tmp_path / "v"))
    with pytest.raises(DriftDetected) as stopped:
        validate(config)
    past = [r for r in stopped.value.drift if r["drifted"]]
    assert [(r["span"], r["kind"], r["feature"], r["measure"]) for r in past] == [
        ("02", "drift", "label", "L-infinity")
    ]
    assert past[0]["threshold"] == 0.1 and past[0]["value"] == pytest.approx(2 / 3, abs=1e-3)
    assert "label" in str(stopped.value) and "0.6667 > 0.1" in str(stopped.value)

    heard = []
    accepted = validate(config.model_copy(update={"accept_drift": True}), heard.append)
    assert accepted["passed"] and accepted["drift_accepted"] == past
    assert not [m for m in check_events(heard, "validate") if m.startswith("computing")]
    assert Path(accepted["drift_html"]).exists()
    # only the span the champion did not learn from is compared: 01 has nothing before it
    only = validate(config.model_copy(update={"new_spans": ["01"]}))
    assert {r["span"] for r in only["drift"]} == {"01"} and only["passed"]

    # A window of the last span: its shards are links into span 02, and 02 is still compared
    # with the span before the window.
    from components import spans

    window = Path(spans.view(str(data), 1))
    assert window.parent.name == "windows" and spans.view(str(data), 1) == str(window)
    assert [p.resolve().parent for p in window.glob("train-*-of-*")] == [data / "spans" / "02"]
    assert spans.manifest(str(window))[0]["name"] == "02"
    with pytest.raises(DriftDetected) as again:
        validate(ValidateConfig(data_dir=str(window), output=str(tmp_path / "w")))
    assert [r["against"] for r in again.value.drift if r["drifted"]] == ["span 01"]
    assert spans.view(str(data), 2) == str(data)  # every span: the dataset itself


def test_skew_of_pre_resized_images_is_measured_as_it_is() -> None:
    """Training images all 96 px wide, validation 40 at 96, 4 at 92 and 4 at 76: TFDV 1.16 says
    Jensen-Shannon 1 (its maximum) because the training side is a constant; by hand it is about
    0.09 bits, and that is what is reported (TFDV's value kept beside it)."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    from components.validate import drift

    train = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"width": [96] * 200}))
    val = tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({"width": [96] * 40 + [92] * 4 + [76] * 4})
    )
    schema = tfdv.infer_schema(train)
    tfdv.get_feature(schema, "width").skew_comparator.jensen_shannon_divergence.threshold = 0.3
    answer = tfdv.validate_statistics(train, schema, serving_statistics=val)
    (row,) = drift.rows("01", "skew", "its training images", answer, val, train)
    # By hand, with the exact values: P = {96: 1}, Q = {96: 40/48, 92: 4/48, 76: 4/48}.
    p, q = {96: 1.0}, {96: 40 / 48, 92: 4 / 48, 76: 4 / 48}
    m = {k: (p.get(k, 0) + q.get(k, 0)) / 2 for k in q}
    by_hand = sum(0.5 * v * np.log2(v / m[k]) for d in (p, q) for k, v in d.items())
    assert by_hand == pytest.approx(0.0888, abs=1e-4)
    assert row["tfdv_value"] == 1.0  # what TFDV says; if a later TFDV fixes it, this notes it
    assert row["value"] == pytest.approx(by_hand, abs=0.005) and not row["drifted"]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ([(96, 96, 10)], [(96, 96, 5)], 0.0),  # the same constant
        ([(96, 96, 10)], [(92, 92, 5)], 1.0),  # two different constants: nothing in common
        ([(0, 1, 5), (1, 2, 5)], [(0, 1, 5), (1, 2, 5)], 0.0),
        ([(0, 1, 10)], [(1, 2, 10)], 1.0),  # disjoint ranges
        # the same buckets: the plain formula on the counts (scipy's distance is its root)
        ([(0, 1, 3), (1, 2, 1)], [(0, 1, 1), (1, 2, 3)], "scipy"),
    ],
)
def test_jensen_shannon_over_common_buckets(first, second, expected) -> None:
    from scipy.spatial.distance import jensenshannon

    from components.validate.drift import jensen_shannon

    if expected == "scipy":
        expected = jensenshannon([3, 1], [1, 3], base=2) ** 2
    assert jensen_shannon(first, second) == pytest.approx(expected, abs=1e-9)


def test_validation_images_copied_from_training_stop_validation_unless_accepted(
    tmp_path: Path,
) -> None:
    """Two training images copied into validation (2 of 11, above the schema's 1%): an anomaly
    naming each pair, exit by ValidationFailed; accept_leaks lets the run through and records
    them. Evaluation then marks exactly those two records."""
    import tensorflow as tf

    from components.evaluate.evaluation import predict_records
    from components.ingest import IngestConfig, run_ingest

    source = make_class_folders(tmp_path / "src")
    for label, name in ((0, "img_3.JPEG"), (2, "img_5.JPEG")):
        folder = f"n0{label:07d}"
        shutil.copy(source / "train" / folder / name, source / "val" / folder / f"copy_{name}")
    data = tmp_path / "data"
    metadata = run_ingest(IngestConfig(source=str(source), output=str(data)))
    assert metadata["duplicates"]["leaked_validation"] == 2
    with pytest.raises(ValidationFailed) as failed:
        validate(ValidateConfig(data_dir=str(data), output=str(tmp_path / "v1")))
    rows = failed.value.anomalies
    assert rows[0]["problem"] == "copies of training images"
    assert rows[0]["detail"].startswith("2 of 11 validation images (18.18%) are exact or near")
    pairs = sorted(Path(r["detail"].split(" = ")[0]).name for r in rows[1:])
    assert pairs == ["copy_img_3.JPEG", "copy_img_5.JPEG"]
    report = validate(
        ValidateConfig(data_dir=str(data), output=str(tmp_path / "v2"), accept_leaks=True)
    )
    assert report["passed"] and len(report["leaks_accepted"]) == 3

    def uniform(jpegs: tf.Tensor) -> tf.Tensor:
        return tf.fill([tf.shape(jpegs)[0], 3], 1 / 3)

    labels, _, _, leaked = predict_records(uniform, str(data), batch_size=4)
    assert leaked.sum() == 2
    names = [
        tf.train.Example.FromString(r.numpy()).features.feature["filename"].bytes_list.value[0]
        for r in tf.data.TFRecordDataset(sorted(str(p) for p in data.glob("validation-*")))
    ]
    # (one validation shard here, so the evaluation's order is the shard's)
    assert sorted(n.decode() for n, hit in zip(names, leaked, strict=True) if hit) == [
        "copy_img_3.JPEG", "copy_img_5.JPEG",
    ]  # fmt: skip


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_the_statistics_page_draws_with_no_network(ingested: Path, tmp_path: Path) -> None:
    """Opened in headless Chromium with every network request failing: the page shows its
    features and charts (the screenshot is far from blank), and it asked for nothing but
    itself; TFDV's Facets page is kept beside it."""
    from PIL import Image

    from tests.browser import Browser

    report = validate(ValidateConfig(data_dir=str(ingested), output=str(tmp_path)))
    page = Path(report["statistics_html"])
    assert (tmp_path / "statistics-facets.html").exists()
    shot = tmp_path / "page.png"
    with Browser(offline=True) as browser:
        shown = browser.open(page.as_uri(), "Features", screenshot=shot,
                             then="document.querySelectorAll('svg rect').length")  # fmt: skip
    assert "No anomalies against the reviewed schema" in shown["text"]
    for feature in ("height", "width", "label", "image"):
        assert feature in shown["text"]
    assert shown["then"] > 10  # bars drawn
    assert [u for u in shown["requested"] if not u.startswith("file://")] == []
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert (pixels < 200).mean() > 0.02  # text and bars, not an empty frame
    # TFDV's own page is an empty frame without the network: its scripts come from the web.
    assert "https://" in (tmp_path / "statistics-facets.html").read_text()
