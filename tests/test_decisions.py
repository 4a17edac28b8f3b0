"""What a run decides from what it found: a table of cases for each decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.decisions import (
    Folder,
    Learned,
    choose_folder,
    model_reference,
    new_spans,
    span_digest,
    spans_tag,
    whether_to_train,
)


def span(name: str, fingerprint: str | None = None) -> dict:
    return {"name": name, "fingerprint": fingerprint or f"fp-{name}"}


A, B, B2, C = span("a"), span("b"), span("b", "fp-b-changed"), span("c")


def champion(*spans: dict, settings: str = "S", code: str = "C", version: str = "4") -> Learned:
    tags = {
        "spans": spans_tag(list(spans)),
        "spans_identity": "+".join(s["name"] + s["fingerprint"] for s in spans),
        "train_settings": settings,
        "code_version": code,
    }
    return Learned.from_tags(version, tags)


def identity(*spans: dict) -> str:
    return "+".join(s["name"] + s["fingerprint"] for s in spans)


@pytest.mark.parametrize(
    ("retrain", "window", "settings", "code", "found", "train", "reason"),
    [
        ("on_new_data", [A, B], "S", "C", champion(A, B), False,
         "nothing new since champion v4 (spans a, b)"),
        ("always", [A, B], "S", "C", champion(A, B), True, "retrain: always"),
        ("on_new_data", [A], "S", "C", None, True, "no champion yet"),
        ("on_new_data", [A, B, C], "S", "C", champion(A, B), True,
         "new or changed spans: c than champion v4"),
        ("on_new_data", [A, B2], "S", "C", champion(A, B), True,
         "new or changed spans: b than champion v4"),
        ("on_new_data", [B], "S", "C", champion(A, B), True, "fewer spans than champion v4"),
        ("on_new_data", [A, B], "S2", "C", champion(A, B), True,
         "other training settings than champion v4"),
        ("on_new_data", [A, B], "S", "C2", champion(A, B), True,
         "other code (C -> C2) than champion v4"),
        ("on_new_data", [A, C], "S2", "C", champion(A, B), True,
         "new or changed spans: c; other training settings than champion v4"),
        ("on_new_data", [A], "S", "C", Learned("2", None, None, None, None), True,
         "champion v2 does not record the data, settings and code it learned from"),
    ],
)  # fmt: skip
def test_whether_to_train(retrain, window, settings, code, found, train, reason) -> None:
    verdict = whether_to_train(retrain, window, identity(*window), settings, code, found)
    assert (verdict.train, verdict.reason) == (train, reason)


def test_a_training_the_gate_refused_is_not_repeated_unless_asked() -> None:
    refused = "run r1's training of the same, refused by the gate (worse than champion v4)"
    verdict = whether_to_train("on_new_data", [A, C], identity(A, C), "S", "C", champion(A, B),
                               refused)  # fmt: skip
    assert not verdict.train and verdict.reason.startswith(f"nothing new since {refused}")
    assert whether_to_train("always", [A], identity(A), "S", "C", None, refused).train
    # a lineage that is the champion's is "nothing new since the champion", refused or not
    same = whether_to_train("on_new_data", [A, B], identity(A, B), "S", "C", champion(A, B),
                            refused)  # fmt: skip
    assert same.reason == "nothing new since champion v4 (spans a, b)"


def test_many_spans_are_named_by_the_first_and_last() -> None:
    window = [span(f"2026-{week:02d}") for week in range(1, 11)]
    verdict = whether_to_train("on_new_data", window, identity(*window), "S", "C",
                               champion(*window))  # fmt: skip
    assert verdict.reason == "nothing new since champion v4 (spans 2026-01 … 2026-10)"


@pytest.mark.parametrize(
    ("window", "found", "new"),
    [
        ([A, B], None, ["a", "b"]),
        ([A, B], champion(A), ["b"]),
        ([A, B2], champion(A, B), ["b"]),
        ([A, B], champion(A, B), []),
        ([A, B], Learned("1", None, None, None, None), ["a", "b"]),
    ],
)
def test_new_spans(window, found, new) -> None:
    assert new_spans(window, found) == new


def test_the_spans_tag_keeps_the_newest_within_mlflow_s_limit() -> None:
    many = [span(f"span-{i:05d}") for i in range(400)]
    tag = spans_tag(many)
    assert len(tag) <= 5000 and tag.endswith(f"span-00399={span_digest('fp-span-00399')}")
    kept = Learned.from_tags("1", {"spans": tag}).spans
    assert "span-00000" not in kept and len(kept) == len(tag.split())


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("champion", ("mine", "champion")),
        ("3", ("mine", "3")),
        ("v3", ("mine", "v3")),
        ("other@champion", ("other", "champion")),
        ("other/7", ("other", "7")),
    ],
)
def test_model_reference(reference, expected) -> None:
    assert model_reference(reference, "mine") == expected


def folder(name: str, finished=False, checkpoints=False, summary=False, changed=0.0) -> Folder:
    return Folder(Path(name), finished, checkpoints, summary, changed)


FRESH = Path("fresh")


@pytest.mark.parametrize(
    ("resume", "found", "chosen", "why"),
    [
        (None, [], FRESH, "starting fresh"),
        (Path("runs/k/train"), [folder("x", finished=True)], Path("runs/k/train"),
         "resuming run k's checkpoints, as asked"),
        (None, [folder("old", True, changed=1), folder("new", True, changed=2)], Path("new"),
         "reusing the finished training in new"),
        (None, [folder("u", checkpoints=True, changed=9), folder("f", finished=True)],
         Path("f"), "reusing the finished"),
        (None, [folder("u1", checkpoints=True, changed=1),
                folder("u2", checkpoints=True, changed=2)], Path("u2"),
         "resuming the unfinished training in u2"),
        (None, [folder("done", checkpoints=True, summary=True)], FRESH, "starting fresh"),
    ],
)  # fmt: skip
def test_choose_folder(resume, found, chosen, why) -> None:
    path, reason = choose_folder(resume, found, FRESH)
    assert path == chosen and reason.startswith(why)
