"""Sealed registry versions: what the gate registered, and nothing anyone else wrote.

Anyone who can write to the registry can add a version, upload files into it and set its tags;
the pipeline acts on all of them: it promotes a version whose `gate_passed` tag says so (when it
settles the alias after a gate that died), compares challengers with the best `top1` ever
recorded, loads the champion's SavedModel (which runs its graph), and starts trainings from, or
distills from, a version's Keras file. So the gate seals each version it registers:

- a **manifest** (tag `trickflow_manifest`, canonical JSON): the model name, the MLflow run, the
  version's source (the logged model its files are read from), the SHA-256 of every file the
  pipeline will ever load from the version (the logged model folder:
  MLmodel, the SavedModel, its environment files; and the Keras file), and every tag set at
  registration (the gate's decision, top-1, the data's fingerprints, the lineage);
- a **seal** (tag `trickflow_seal`): an HMAC-SHA256 of the manifest under the stack's
  TRICKFLOW_REGISTRY_KEY, which the registry's servers never hold (without a key, a plain SHA-256:
  integrity against accidents only, since anyone can recompute it).

Every use checks the seal first: the tags the pipeline acts on are the manifest's (a tag changed
since registration breaks the seal), and a file is loaded only if its digest is the manifest's.
A version that is not sealed, or whose seal does not verify, is ignored with a warning naming it
(the champion is refused, so that a tampered champion is an error a person sees). A person who
knows an older or hand-registered version is theirs seals it with
`python -m components.evaluate.trust`.

The version number is not in the manifest (it is known only once MLflow registers the version,
and sealing afterwards would leave a window where a registered version has no seal), but its
source is: copying a version's tags and seal to a new version of the same name, source and run
makes an exact copy of a version the gate registered (the same files), nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

SEAL_TAG = "trickflow_seal"
MANIFEST_TAG = "trickflow_manifest"
KEY_VARIABLE = "TRICKFLOW_REGISTRY_KEY"
MODEL_FOLDER = "model"  # the logged model's folder in the manifest's file names
# Tags set after registration (bookkeeping, never acted on as a decision) and the seal's own.
UNSEALED = frozenset({SEAL_TAG, MANIFEST_TAG, "settled"})


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(2**20):
            digest.update(piece)
    return digest.hexdigest()


# MLflow writes this into a model folder downloaded by `models:/NAME/VERSION` (the name and
# version it was fetched as): not one of the logged files, and never loaded as code.
DOWNLOAD_NOTE = "registered_model_meta"


def folder_digests(folder: Path, prefix: str = MODEL_FOLDER) -> dict[str, str]:
    """SHA-256 of every file under `folder`, named `prefix/relative/path`."""
    folder = Path(folder)
    return {
        f"{prefix}/{path.relative_to(folder).as_posix()}": file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != DOWNLOAD_NOTE
    }


def manifest(
    model_name: str, run_id: str, source: str, files: dict[str, str], tags: dict[str, str]
) -> str:
    """The manifest as canonical JSON (sorted keys, no spaces): the bytes the seal covers."""
    body = {
        "model_name": model_name,
        "run_id": run_id,
        "source": source,
        "files": dict(sorted(files.items())),
        "tags": {k: str(v) for k, v in sorted(tags.items()) if k not in UNSEALED},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def seal(text: str) -> str:
    key = os.environ.get(KEY_VARIABLE)
    if not key:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return "hmac-sha256:" + hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def sealed_tags(
    model_name: str, run_id: str, source: str, files: dict[str, str], tags: dict
) -> dict:
    """The manifest and seal tags for a version about to be registered from `source` (the
    model URI MLflow records as the version's source) with `tags`."""
    text = manifest(model_name, run_id, source, files, tags)
    return {MANIFEST_TAG: text, SEAL_TAG: seal(text)}


def verify(version) -> tuple[dict | None, str]:
    """(the manifest, "") when `version` (an MLflow ModelVersion) carries a seal this process
    can verify and its tags are still the manifest's; else (None, why not)."""
    tags = dict(version.tags or {})
    text, found = tags.get(MANIFEST_TAG), tags.get(SEAL_TAG)
    if not text or not found:
        return None, "it carries no seal (registered outside this pipeline, or before seals)"
    key = os.environ.get(KEY_VARIABLE)
    if key and not found.startswith("hmac-sha256:"):
        return None, f"its seal was made without a key, and this stack has {KEY_VARIABLE}"
    if not key and found.startswith("hmac-"):
        return None, f"it is sealed with a {KEY_VARIABLE} this process does not have"
    if not hmac.compare_digest(seal(text).encode(), found.encode()):
        return None, (
            f"its seal does not match its manifest (written by someone without this stack's "
            f"{KEY_VARIABLE}, or the manifest was changed)"
        )
    body = json.loads(text)
    if not (
        isinstance(body, dict)
        and isinstance(body.get("tags"), dict)
        and isinstance(body.get("files"), dict)
    ):
        return None, "its manifest is not one this pipeline writes"
    if (body.get("model_name"), body.get("run_id"), body.get("source")) != (
        version.name, version.run_id, version.source,
    ):  # fmt: skip
        return None, "its manifest was sealed for another model, run or source"
    changed = sorted(k for k, v in body["tags"].items() if tags.get(k) != v)
    if changed:
        return None, f"its tags {', '.join(changed)} were changed after it was sealed"
    return body, ""


def check_files(body: dict, found: dict[str, str], prefix: str) -> str:
    """ "" when the files found under `prefix` are exactly the manifest's, else what differs."""
    wanted = {k: v for k, v in body["files"].items() if k.startswith(prefix + "/")}
    if found == wanted:
        return ""
    changed = sorted(k for k in wanted.keys() & found.keys() if wanted[k] != found[k])
    added, missing = sorted(found.keys() - wanted.keys()), sorted(wanted.keys() - found.keys())
    parts = [
        f"{label}: {', '.join(names[:5])}"
        for label, names in (("changed", changed), ("added", added), ("missing", missing))
        if names
    ]
    return "its files differ from those sealed at registration (" + "; ".join(parts) + ")"
