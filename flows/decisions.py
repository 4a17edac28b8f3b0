"""What a run of train-imagenet does, decided from what it found: pure functions, table-tested.

- `new_spans`: which spans of the data the champion has not learned from;
- `whether_to_train`: train, or end with "nothing new since champion vN";
- `model_reference`: which registered version `distill_from` / `init_from` name;
- `choose_folder`: which training folder to train in (resume, reuse, or fresh).

The flow gathers the facts (the manifest, the champion's tags, the folders on disk) and acts on
the answers; nothing here reads a file or talks to a server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

# Tags of a registered version (and of its training's MLflow run) that say what it learned from.
SPANS_TAG = "spans"  # "name=digest name=digest ...", oldest first
SPANS_ID_TAG = "spans_identity"  # components.spans.identity of the same spans
SETTINGS_TAG = "train_settings"  # `settings_identity` of the training settings
CODE_TAG = "code_version"  # a digest of the pipeline's code and locked dependencies
PARENT_TAG = "parent"  # models:/NAME/V whose weights the training started from
MAX_TAG = 5000  # MLflow's limit on a tag value


@dataclass(frozen=True)
class Learned:
    """What a registered version says it was trained on (None: it does not say)."""

    version: str
    spans: dict[str, str] | None  # span name -> short digest of its fingerprint
    spans_identity: str | None
    settings: str | None
    code: str | None

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> Learned:
        listed = tags.get(SPANS_TAG)
        spans = None
        if listed is not None:
            spans = dict(pair.split("=", 1) for pair in listed.split() if "=" in pair)
        return cls(
            version, spans, tags.get(SPANS_ID_TAG), tags.get(SETTINGS_TAG), tags.get(CODE_TAG)
        )


def span_digest(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:10]


def spans_tag(spans: list[dict]) -> str:
    """The spans as a tag value: `name=digest` pairs, the oldest dropped past MLflow's limit
    (a span the tag no longer lists only counts as new for the drift check)."""
    pairs = [f"{s['name']}={span_digest(s['fingerprint'])}" for s in spans]
    while len(" ".join(pairs)) > MAX_TAG:
        pairs.pop(0)
    return " ".join(pairs)


def settings_identity(*parts: str) -> str:
    """A short digest of everything that shapes what is trained, besides the data."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def new_spans(window: list[dict], champion: Learned | None) -> list[str]:
    """Names of the spans in `window` that the champion did not learn from: absent from its
    spans, or changed since. All of them when there is no champion or it does not say."""
    if champion is None or champion.spans is None:
        return [s["name"] for s in window]
    return [
        s["name"] for s in window if champion.spans.get(s["name"]) != span_digest(s["fingerprint"])
    ]


@dataclass(frozen=True)
class Verdict:
    train: bool
    reason: str


def whether_to_train(
    retrain: str,
    window: list[dict],
    window_identity: str,
    settings: str,
    code: str,
    champion: Learned | None,
    refused: str | None = None,
) -> Verdict:
    """Train unless the champion was trained on exactly these spans, with these settings and
    this code, or a training of exactly these was judged and refused already (`refused` says
    which and why): the same again would be refused again. `retrain: always` trains anyway."""
    if retrain == "always":
        return Verdict(True, "retrain: always")
    verdict = _against_champion(window, window_identity, settings, code, champion)
    if verdict.train and refused is not None:
        return Verdict(False, f"nothing new since {refused}; retrain: always trains anyway")
    return verdict


def _against_champion(
    window: list[dict], window_identity: str, settings: str, code: str, champion: Learned | None
) -> Verdict:
    if champion is None:
        return Verdict(True, "no champion yet")
    which = f"champion v{champion.version}"
    if None in (champion.spans_identity, champion.settings, champion.code):
        return Verdict(True, f"{which} does not record the data, settings and code it learned from")
    changed = []
    if champion.spans_identity != window_identity:
        fresh = new_spans(window, champion)
        changed.append(f"new or changed spans: {', '.join(fresh)}" if fresh else "fewer spans")
    if champion.settings != settings:
        changed.append("other training settings")
    if champion.code != code:
        changed.append(f"other code ({champion.code} -> {code})")
    if changed:
        return Verdict(True, f"{'; '.join(changed)} than {which}")
    names = [s["name"] for s in window]
    shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} … {names[-1]}"
    return Verdict(False, f"nothing new since {which} (spans {shown})")


def model_reference(reference: str, model_name: str) -> tuple[str, str]:
    """(registered model, "champion" or version) that a reference names: "champion" and "3"
    mean this run's model, "NAME@champion" and "NAME/3" another one."""
    for separator in ("@", "/"):
        name, found, which = reference.rpartition(separator)
        if found:
            return name, which
    return model_name, reference


@dataclass(frozen=True)
class Folder:
    """A training folder of the same data and settings, as found on disk."""

    path: Path
    finished: bool  # trained, and no gate has judged it yet
    checkpoints: bool
    summary: bool  # the training ended (judged or not)
    changed: float  # when its trained.json or checkpoints last changed


def choose_folder(resume_run: Path | None, found: list[Folder], fresh: Path) -> tuple[Path, str]:
    """The folder to train into, and why: `resume_run`'s if asked; else a finished training
    that no gate has judged (its run failed after training): straight to evaluation; else the
    newest unfinished one (checkpoints, no summary), whichever run started it; else `fresh`."""
    if resume_run is not None:
        return resume_run, f"resuming run {resume_run.parent.name}'s checkpoints, as asked"
    done = [f for f in found if f.finished]
    if done:
        newest = max(done, key=lambda f: f.changed).path
        return newest, (
            f"reusing the finished training in {newest}, which no gate has judged yet (its run "
            "failed after training); going straight to evaluation"
        )
    unfinished = [f for f in found if f.checkpoints and not f.summary]
    if unfinished:
        newest = max(unfinished, key=lambda f: f.changed).path
        return newest, f"resuming the unfinished training in {newest} (same data and settings)"
    return fresh, "starting fresh: no unfinished training of this data and configuration"
