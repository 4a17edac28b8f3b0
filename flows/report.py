"""The run's report: a typed record that each stage fills in, saved as report.json.

`<work_dir>/runs/<flow_run_id>/report.json` says what each stage did (None: not reached), how
long it took, and, when the run failed, where, why and what to do. The run summary artifact and
`flows.follow` are made from it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from components import atomic, masking

HINTS = {
    "data_dir": "pass the folder that holds train/ and val/ (or the ILSVRC or Kaggle tree, or "
    "spans/), as the worker sees it",
    "ingest": "the error names the file or folder; quarantine.jsonl lists rejected images",
    "champion": "the MLflow registry did not answer, so the run cannot tell what is new; run it "
    "again once the tracking server is back",
    "validate": "the anomaly table says which feature breaks the reviewed schema "
    "(schemas/image_examples.pbtxt): fix the data, or review the schema if the data is right",
    "drift": "the drift table says which feature moved past its threshold against the spans "
    "before: fix the span, or run again with accept_drift if the change is real, or review the "
    "thresholds in schemas/image_examples.pbtxt",
    "teacher": "distill from a version trained on the same labels, or leave distill_from empty",
    "init_from": "start from a version trained on the same labels and model, or leave init_from "
    "empty to train from scratch",
    "train": "run the same deployment again to resume from the last checkpoint once the cause "
    "is fixed",
    "evaluate": "the servable could not be evaluated; the error names the file",
    "gate_and_register": "the error says what the MLflow registry answered or refused; once that "
    "is fixed, run the same deployment again: it reuses this finished training and goes "
    "straight to evaluation",
}


def reason(err: Exception) -> str:
    """One line saying why: the anomalies in brief, or the error's first line."""
    anomalies = getattr(err, "anomalies", None)
    if anomalies:
        listed = "; ".join(f"{a['split']} {a['feature']}: {a['problem']}" for a in anomalies[:5])
        more = f"; and {len(anomalies) - 5} more" if len(anomalies) > 5 else ""
        return f"{type(err).__name__}: {len(anomalies)} data anomalies: {listed}{more}"
    return f"{type(err).__name__}: {err}".splitlines()[0][:1000]


class RunReport(BaseModel):
    """Each stage's outcome (None: not reached). Stages fill in their part as they end."""

    flow_run_id: str
    preset: str
    data_dir: str
    report_path: str
    spans: list[str] | None = Field(None, description="the spans this run's data holds")
    new_spans: list[str] | None = Field(None, description="those the champion did not learn")
    decision: dict[str, Any] | None = Field(None, description="train or skip, and why")
    ingest: dict[str, Any] | None = None
    validate_: dict[str, Any] | None = Field(None, alias="validate")
    drift: list[dict[str, Any]] | None = Field(None, description="every measured distance")
    teacher: dict[str, Any] | None = None
    init_from: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    evaluate: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    registry: dict[str, Any] = Field(default_factory=dict)
    seconds: dict[str, float] = Field(default_factory=dict)
    failed: dict[str, str] | None = None
    links: dict[str, str] | None = Field(
        None, description="the run's pages (statistics, evaluation, curves, report) over HTTP"
    )

    model_config = {"populate_by_name": True}

    @contextmanager
    def stage(self, name: str):
        """Records the stage's wall time and, when it fails, the stage, the reason and what to
        do (the first failure wins: an outer stage does not overwrite an inner one's)."""
        start = time.perf_counter()
        try:
            yield
        except Exception as err:
            if self.failed is None:
                hint = HINTS.get(getattr(err, "hint", name), HINTS.get(name, ""))
                self.failed = {"stage": name, "reason": reason(err), "hint": hint}
            raise
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)

    def as_dict(self) -> dict:
        """The report as plain data, credentials masked in every text (a path or a reason may
        quote a URL with its password)."""
        return masking.scrubbed(self.model_dump(by_alias=True, mode="json"))

    def save(self) -> None:
        atomic.write_json(Path(self.report_path), self.as_dict())
