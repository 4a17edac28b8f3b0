"""Spans: a dataset that grows by folders of new images, each converted once.

A source that holds `spans/` is a sequence of spans, `spans/<span>/` each in any layout that
ingestion reads (class folders, ILSVRC2012, Kaggle). Span names sort in arrival order (dates,
`2026-11-30`, or numbers with leading zeros). A span is read only once it is complete: once it
holds the marker file `_SUCCESS`, written last by whoever copies the span in, and (on a local
filesystem) no file in it is newer than the marker: a copy that wrote the marker first (rsync
sorts `_SUCCESS` before the images) or a file changed after the span was marked leaves it
unread until the marker is written again. A source without `spans/` is one span, as it always
was.

Ingestion writes each span into `<dataset>/spans/<span>/` (its own shards, metadata.json and
quarantine.jsonl; labels.txt with the labels over all spans) and, at the dataset's root, a view
of all spans: links named like shards (`train-00000-of-00012` -> `spans/a/train-00000-of-00004`),
the labels, the summed metadata with the manifest (`spans`: each span's name, fingerprint, counts
and folder) and every span's quarantine. `view(root, last)` makes the same kind of folder for
the newest `last` spans. Every later stage reads a view like any ingested dataset.

Labels are the positions of the class ids sorted over all spans. A span that brings a new class
changes every label, so every span is converted again: its fingerprint holds the label set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter

from apache_beam.io.filesystems import FileSystems

from components import dataset
from components.dataset import SPLITS, join
from components.ingest.listing import children, is_dir

SPANS = "spans"  # the folder of spans, in a source and in a dataset
MARKER = "_SUCCESS"  # a span is complete once it holds this file
WINDOWS = "windows"  # views of the newest spans, in a dataset
WINDOW = re.compile(r"^(all|last [1-9][0-9]*)$")
SUMMED = ("inputs", "records", "quarantined", "reencoded", "with_boxes")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def newer_than_marker(folder: str) -> str | None:
    """A file under the local span `folder` modified after its marker was (its path relative to
    the span), or None. On object stores the marker alone decides (their listings give no
    reliable order of writes)."""
    if "://" in folder:
        return None
    marked = os.stat(os.path.join(folder, MARKER)).st_mtime_ns
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.stat(path).st_mtime_ns > marked:
                    return os.path.relpath(path, folder)
            except FileNotFoundError:  # removed while listed: the listing will say
                continue
    return None


def marker_stamp(folder: str) -> str:
    """When the span's marker was written (local; "marked" on object stores)."""
    marker = join(folder, MARKER)
    return "marked" if "://" in marker else str(os.stat(marker).st_mtime_ns)


def source_spans(
    source: str,
    require_complete: bool = True,
    known: dict | None = None,
    follow_outside: bool = False,
) -> tuple[list[tuple[str, str]], list[str]] | None:
    """None for a source without `spans/`; else its complete spans as (name, folder) in order,
    and one line for each entry that is not read (an incomplete span, a stray file). No
    complete span is an error unless not `require_complete`. A span whose marker has the stamp
    `known` gives for it is taken as complete without walking its files again (the watcher's
    spans announced already). A span folder that is a link leading out of `spans/` is not read
    unless `follow_outside` (the ingestion's follow_outside_links)."""
    found = _span_folders(source, known or {}, follow_outside)
    if found is None:
        return None
    complete, not_read = found
    if not complete and require_complete:
        root = join(source, SPANS)
        raise ValueError(
            f"{root}: no complete span (a span folder is read once it holds {MARKER}, newer "
            "than every file in it); "
            + ("; ".join(not_read) if not_read else "the folder is empty")
        )
    return complete, not_read


def present_spans(source: str) -> set[str]:
    """Every span folder of the source, complete or not: the spans whose converted shards are
    kept (a marker missing for a moment is no reason to throw a converted span away)."""
    root = join(source, SPANS)
    if not is_dir(root):
        return set()
    return {n for n in children(root)[0] if not n.startswith(".")}


def _span_folders(
    source: str, known: dict, follow_outside: bool
) -> tuple[list[tuple[str, str]], list[str]] | None:
    root = join(source, SPANS)
    if not is_dir(root):
        return None
    for plain in ("train", "ILSVRC"):
        if is_dir(join(source, plain)):
            raise ValueError(
                f"{source}: holds both {SPANS}/ and {plain}/; move the images of {plain}/ into "
                f"a span folder ({SPANS}/<span>/{plain}/) so that every image belongs to one span"
            )
    complete, not_read = [], []
    folders, others = children(root)
    home = None if "://" in root else os.path.realpath(root)
    not_read += [f"{join(root, n)}: not a span folder" for n in others if not n.startswith(".")]
    for name in (n for n in folders if not n.startswith(".")):
        path = join(root, name)
        if not NAME.match(name):
            not_read.append(f"{path}: a span name is letters, digits, '.', '_', '-'")
        elif home and not follow_outside and _outside(real := os.path.realpath(path), home):
            not_read.append(
                f"{path}: a link out of {SPANS}/ (points to {real}); not read (set "
                "follow_outside_links to read it)"
            )
        elif not dataset.exists(join(path, MARKER)):
            not_read.append(f"{path}: no {MARKER} marker yet (still being copied?); not read")
        elif known.get(name) != marker_stamp(path) and (newer := newer_than_marker(path)):
            not_read.append(
                f"{path}: {newer} is newer than its {MARKER} marker (still being copied, or "
                f"changed after it was marked; write {MARKER} again when it is whole); not read"
            )
        else:
            complete.append((name, path))
    return complete, not_read


def _outside(real: str, spans_root: str) -> bool:
    return os.path.dirname(real) != spans_root


def parse_window(text: str) -> int | None:
    """'all' -> None; 'last 4' -> 4."""
    if not WINDOW.match(text):
        raise ValueError(f"spans: expected 'all' or 'last N' (N >= 1), got {text!r}")
    return None if text == "all" else int(text.split()[1])


def manifest(data_dir: str) -> list[dict]:
    """The spans of an ingested dataset or view, oldest first (name, fingerprint, counts,
    folder). A source without spans is one span named after the source's folder."""
    metadata = dataset.read_metadata(data_dir)
    if "spans" in metadata:
        return metadata["spans"]
    name = str(metadata.get("source", data_dir)).rstrip("/").rsplit("/", 1)[-1]
    return [span_entry(name or "data", ".", metadata)]


def span_entry(name: str, folder: str, metadata: dict) -> dict:
    """What the manifest says of one span, from its metadata.json."""
    return {
        "name": name,
        "folder": folder,  # relative to the dataset's root
        "fingerprint": metadata["fingerprint"],
        "layout": metadata["layout"],
        "source": metadata["source"],
        **{key: metadata.get(key, {}) for key in SUMMED},
        "per_class": metadata["per_class"],
    }


def identity(spans: list[dict]) -> str:
    """One short digest of which spans, with which contents: equal digests, equal data."""
    text = "\n".join(f"{s['name']}\0{s['fingerprint']}" for s in spans)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def described(spans: list[dict]) -> str:
    """'a, b, c' or, for many, 'a … z (52 spans)'."""
    names = [s["name"] for s in spans]
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} … {names[-1]} ({len(names)} spans)"


def combined_metadata(spans: list[dict], spans_metadata: list[dict], source: str) -> dict:
    """The metadata.json of a view: the spans' counts summed, the manifest under `spans`."""
    first = spans_metadata[0]
    summed = {
        key: {s: sum(m.get(key, {}).get(s, 0) for m in spans_metadata) for s in SPLITS}
        for key in SUMMED
    }
    per_class = {s: Counter() for s in SPLITS}
    formats = Counter()
    for metadata in spans_metadata:
        for split in SPLITS:
            per_class[split].update({int(k): v for k, v in metadata["per_class"][split].items()})
        formats.update(metadata.get("source_formats", {}))
    return {
        "format_version": first["format_version"],
        "fingerprint": f"spans-{identity(spans)}",
        "layout": "spans",
        "source": source,
        "config": first["config"],
        "num_classes": first["num_classes"],
        **summed,
        "resized": sum(m.get("resized", 0) for m in spans_metadata),
        "box_problems": sorted(p for m in spans_metadata for p in m.get("box_problems", [])),
        "not_read": [line for m in spans_metadata for line in m.get("not_read", [])],
        "source_formats": dict(sorted(formats.items())),
        "shards": {s: sum(m["shards"][s] for m in spans_metadata) for s in SPLITS},
        "per_class": {s: {str(k): per_class[s][k] for k in sorted(per_class[s])} for s in SPLITS},
        # found within each span (each span's duplicates.json); a view's own search, which
        # also pairs spans, replaces it (view_duplicates)
        "duplicates": _summed_duplicates(spans_metadata),
        "spans": spans,
    }


def _summed_duplicates(spans_metadata: list[dict]) -> dict | None:
    found = [m["duplicates"] for m in spans_metadata if m.get("duplicates")]
    if not found:
        return None
    return {
        "file": f"{SPANS}/<span>/{found[0]['file']}",
        "pairs": {k: sum(f["pairs"][k] for f in found) for k in found[0]["pairs"]},
        "leaked_validation": sum(f["leaked_validation"] for f in found),
        "search": "; ".join(sorted({f["search"] for f in found})),
        "near_bits": found[0]["near_bits"],
    }


def view_duplicates(
    root: str, spans: list[dict], folder: str, view_shard: dict, spans_metadata: list[dict]
) -> dict | None:
    """Copies among all of a view's spans, between spans too (a validation image of one span
    that is a training image of another leaks just the same): every span's fingerprints
    searched together (components/ingest/similarity.py), written to the view's duplicates.json
    with the leaked validation records under the view's own shard names, for the gate. A span
    ingested before fingerprints were kept is not searched against the others (named in
    `spans_not_searched`); its own copies still count. Returns the counts for metadata.json."""
    from components.ingest.similarity import DUPLICATES, FINGERPRINTS, find_duplicates

    rows, record_of, not_searched, leaked = [], {}, [], set()
    counts = Counter()
    for span, metadata in zip(spans, spans_metadata, strict=True):
        span_folder = join(root, span["folder"])

        def in_view(record: str, span: dict = span) -> str:
            shard, index = record.rsplit("#", 1)
            return f"{view_shard[(span['name'], shard)]}#{index}"

        path = join(span_folder, FINGERPRINTS)
        if dataset.exists(path):
            for split, record, source, digest, hashes in json.loads(dataset.read_text(path))[
                "records"
            ]:
                rows.append({"split": split, "path": source, "digest": digest, "hashes": hashes})
                record_of[(split, source)] = in_view(record)
            continue
        not_searched.append(span["name"])
        own = join(span_folder, DUPLICATES)
        if dataset.exists(own):
            leaked.update(
                in_view(r) for r in json.loads(dataset.read_text(own)).get("leaked_records", [])
            )
        counts.update((metadata.get("duplicates") or {}).get("pairs", {}))
    if not rows and not leaked and not counts:
        if dataset.exists(join(folder, DUPLICATES)):  # never a stale list for the gate
            FileSystems.delete([join(folder, DUPLICATES)])
        return _summed_duplicates(spans_metadata)
    found = find_duplicates(rows)
    found["counts"] = {k: v + counts[k] for k, v in found["counts"].items()}
    leaked.update(record_of[(dataset.VALIDATION, p)] for p in found["leaked"])
    found["leaked_records"] = sorted(leaked)
    found["spans_not_searched"] = not_searched
    dataset.write_text(
        join(folder, DUPLICATES), json.dumps(found, indent=1, ensure_ascii=False) + "\n"
    )
    search = found["search"] + (
        f"; spans {', '.join(not_searched)} only within themselves" if not_searched else ""
    )
    return {
        "file": DUPLICATES,
        "pairs": found["counts"],
        "leaked_validation": len(leaked),
        "search": f"all spans together: {search}",
        "near_bits": found["near_bits"],
    }


def write_view(
    root: str,
    spans: list[dict],
    folder: str,
    extra_not_read: list[str],
    source: str,
    previous: dict | None = None,
) -> dict:
    """Makes `folder` a dataset of `spans` (manifest entries, folders relative to `root`) from
    `source`: shard links (copies on object stores), labels, summed metadata and quarantine;
    a window also names the span before its first (`previous_span`), the baseline of its drift.
    Returns the metadata. Writing the same view twice gives the same folder."""
    spans_metadata = [dataset.read_metadata(join(root, s["folder"])) for s in spans]
    metadata = combined_metadata(spans, spans_metadata, source)
    metadata["not_read"] = extra_not_read + metadata["not_read"]
    if folder != root:  # a window: folders relative to its own root
        metadata["spans"] = [{**s, "folder": _relative(root, folder, s["folder"])} for s in spans]
        if previous is not None:
            metadata["previous_span"] = {
                **previous,
                "folder": _relative(root, folder, previous["folder"]),
            }
    if "://" not in folder:
        os.makedirs(folder, exist_ok=True)
    _clear_shards(folder)
    view_shard = {}  # (span, its shard's name) -> the name the view gives it
    for split in SPLITS:
        shards = [
            (s["name"], p)
            for s in spans
            for p in dataset.shard_files(join(root, s["folder"]), split)
        ]
        for number, (span, path) in enumerate(shards):
            name = dataset.shard_name(split, number, len(shards))
            _link(path, join(folder, name))
            view_shard[(span, path.rsplit("/", 1)[-1])] = name
    metadata["duplicates"] = view_duplicates(root, spans, folder, view_shard, spans_metadata)
    first = join(root, spans[0]["folder"])
    dataset.write_text(join(folder, dataset.LABELS), dataset.read_text(join(first, dataset.LABELS)))
    rows = []
    for span in spans:
        for row in dataset.read_quarantine(join(root, span["folder"])):
            rows.append(
                json.dumps({**row, "span": span["name"]}, sort_keys=True, ensure_ascii=False) + "\n"
            )
    dataset.write_text(join(folder, dataset.QUARANTINE), "".join(rows))
    dataset.write_text(
        join(folder, dataset.METADATA), json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    )
    return metadata


def view(root: str, last: int | None) -> str:
    """The dataset folder of the newest `last` spans of the dataset at `root` (None or at
    least as many as there are: `root` itself), made if missing. Views are named by their
    spans' contents, so a view is never rewritten under a stage that reads it."""
    spans = manifest(root)
    if last is None or last >= len(spans):
        return root
    chosen, before = spans[-last:], spans[-last - 1]
    # named by its spans and the one before them (its drift baseline)
    folder = join(root, WINDOWS, f"last-{last}-{identity(spans[-last - 1 :])}")
    if dataset.exists(join(folder, dataset.METADATA)):
        return folder
    source = dataset.read_metadata(root)["source"]
    if "://" in folder:  # object stores publish each object whole; the same view, same bytes
        write_view(root, chosen, folder, [], source, before)
        return folder
    # Made aside and renamed into place whole: a run reading this window never sees it half
    # made, and of two runs making it at once the first rename wins.
    aside = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    write_view(root, chosen, aside, [], source, before)  # links relative to a sibling
    try:
        os.rename(aside, folder)
    except OSError:  # made meanwhile by another run, or a torn one left by a kill
        if not dataset.exists(join(folder, dataset.METADATA)):
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(aside, folder)
        shutil.rmtree(aside, ignore_errors=True)
    return folder


def _relative(root: str, folder: str, span_folder: str) -> str:
    """A span's folder as the window at `folder` names it: relative locally, in full on object
    stores (which have no `..`)."""
    if "://" in root:
        return join(root, span_folder)
    return os.path.relpath(os.path.join(root, span_folder), folder)


def span_folder(data_dir: str, span: dict) -> str:
    """Where a manifest entry's shards are."""
    return span["folder"] if "://" in span["folder"] else join(data_dir, span["folder"])


def _clear_shards(folder: str) -> None:
    stale = [
        m.path
        for split in SPLITS
        for m in FileSystems.match([dataset.shard_pattern(folder, split)])[0].metadata_list
    ]
    if stale:
        FileSystems.delete(stale)


def _link(target: str, name: str) -> None:
    """`name` refers to `target`: a relative link locally (the dataset can move as a whole), a
    copy on object stores, which have no links."""
    if "://" in name:
        FileSystems.copy([target], [name])
        return
    relative = os.path.relpath(target, os.path.dirname(name))
    # a name no shard glob (`train-*-of-*`) matches, should a kill leave it behind
    temporary = os.path.join(os.path.dirname(name), f".{os.path.basename(name)}.tmp{os.getpid()}")
    os.symlink(relative, temporary)
    os.replace(temporary, name)
