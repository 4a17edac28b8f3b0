"""What each stage shows in the Prefect UI: tables, markdown and progress artifacts."""

from __future__ import annotations

import math
from urllib.parse import quote

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.markdown import code, link, text

QUARANTINE_ROWS_SHOWN = 200


def cells(rows: list[dict]) -> list[dict]:
    """Table rows with every string made literal: the UI renders each cell as markdown, and
    paths, class names, span names and reasons come from data (flows/markdown.py)."""
    return [{k: text(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]


def publish_ingest(metadata: dict, quarantine: list[dict]) -> None:
    rows = [
        {
            "split": s,
            "inputs": metadata["inputs"][s],
            "written": metadata["records"][s],
            "quarantined": metadata["quarantined"][s],
            "re-encoded": metadata["reencoded"][s],
            # metadata written before boxes were counted has no such entry
            "with boxes": metadata.get("with_boxes", {}).get(s, "-"),
            "shards": metadata["shards"][s],
        }
        for s in ("train", "validation")
    ]
    note = " (reused: inputs unchanged)" if metadata.get("reused") else ""
    not_read = metadata.get("not_read", [])
    found = metadata.get("duplicates")
    copies = ""
    if found:
        pairs = found["pairs"]
        copies = (
            f"; copies: {found['leaked_validation']} validation images copy training images, "
            f"{pairs['train']} pairs within train, {pairs['validation']} within validation "
            f"({code(found['file'])})"
        )
    create_table_artifact(
        rows,
        key="ingest-counts",
        description=f"Ingestion of {code(metadata['source'])}{note}: "
        f"{metadata['num_classes']} classes, layout "
        f"{text(metadata['layout'])}; written + quarantined = every entry under the split folders"
        + copies
        + (f"; not read: {text('; '.join(not_read))}" if not_read else ""),
    )
    shown = quarantine[:QUARANTINE_ROWS_SHOWN]
    more = len(quarantine) - len(shown)
    create_table_artifact(
        cells(shown) or [{"path": "-", "split": "-", "reason": "nothing quarantined"}],
        key="ingest-quarantine",
        description=f"{len(quarantine)} files quarantined"
        + (f"; {more} more in quarantine.jsonl" if more > 0 else ""),
    )


def _statistics_line(report: dict) -> str:
    page = report.get("statistics_html")
    if not page:
        return ""
    return (
        f"\n\nStatistics of both splits side by side (TFDV's Facets page): {code(page)}; with a "
        "tracking server, the run summary links to its copy in the MLflow run, which any "
        "browser that reaches the server opens."
    )


def publish_validation(report: dict) -> None:
    drift = report.get("drift") or []
    if drift:
        drifted = [row for row in drift if row["drifted"]]
        stops = "" if report.get("passed", True) or report["anomalies"] else ": the run stops"
        create_table_artifact(
            cells(drift),
            key="validation-drift",
            description=(
                f"{len(drifted)} of {len(drift)} distances past their thresholds{stops}"
                if drifted
                else f"all {len(drift)} distances within their thresholds"
            )
            + " (drift: each new span against the span before it; skew: a span's validation "
            "images against its training images; thresholds in schemas/image_examples.pbtxt)",
        )
    if report["anomalies"]:
        create_table_artifact(
            cells(report["anomalies"]),
            key="validation-anomalies",
            description=f"{len(report['anomalies'])} anomalies: the run stops"
            + _statistics_line(report),
        )
    elif "splits" in report:  # a run stopped by drift alone has no anomalies and no counts here
        counts = ", ".join(
            f"{text(s)}: {v['examples']} examples" for s, v in report["splits"].items()
        )
        create_markdown_artifact(
            f"**No anomalies** against the reviewed schema ({counts}; "
            f"label domain [0, {report['num_classes']}))." + _statistics_line(report),
            key="validation-anomalies",
        )


class TrainingProgress:
    """A live progress bar and the per-epoch loss/accuracy table for a training run."""

    def __init__(self):
        self.artifact_id = create_progress_artifact(
            0.0, key="training-progress", description="training steps done"
        )
        self.last_loss = float("nan")
        self.history: list[dict] = []

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "log":
            self.last_loss = event["loss"]
            update_progress_artifact(
                self.artifact_id,
                100.0 * event["step"] / event["total_steps"],
                description=event["line"],
            )
        elif kind == "epoch":
            self.history.append(
                {
                    "epoch": event["epoch"],
                    "step": event["step"],
                    "lr": round(event["lr"], 6),
                    "loss": round(self.last_loss, 4),
                    "val_top1": round(event["top1"], 4) if "top1" in event else None,
                    "val_top5": round(event["top5"], 4) if "top5" in event else None,
                }
            )
            # A handful of versions per run: every fifth of the epochs and the last one, so the
            # run's graph in the UI is not flooded with one marker per epoch.
            every = max(1, math.ceil(event["epochs"] / 5))
            if event["epoch"] % every == 0 or event["epoch"] == event["epochs"]:
                create_table_artifact(
                    self.history,
                    key="training-history",
                    description=f"epoch {event['epoch']} of {event['epochs']}",
                )
        elif kind == "done":
            update_progress_artifact(self.artifact_id, 100.0, description="training finished")


def paired_tables(gate: dict) -> str:
    """The champion comparison, pair by pair: overall, per span, and the classes that lost."""
    compared = gate.get("comparison")
    if not compared:
        return ""

    def row(name: str, c: dict) -> str:
        return (
            f"| {text(str(name))} | {c['n']:,} | {c['challenger_top1']:.4f} | "
            f"{c['baseline_top1']:.4f} | {100 * c['difference']:+.2f} | "
            f"{100 * c['low']:+.2f} to {100 * c['high']:+.2f} | {c['only_challenger']} | "
            f"{c['only_baseline']} | {c['p_value']:.3g} |"
        )

    rows = [row("all images", compared)]
    rows += [row(f"span {s['group']}", s) for s in gate.get("spans") or []]
    rows += [row(f"class {c['name']}", c) for c in (gate.get("classes") or [])[:5]]
    level = f"{100 * compared['level']:g}%"
    return (
        f"### Paired with the champion (McNemar's exact test, {level} intervals)\n\n"
        "| images | n | challenger | champion | difference (points) | interval | only the "
        "challenger right | only the champion right | p |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
    )


def publish_evaluation(metrics: dict, gate: dict) -> None:
    worst = "\n".join(
        f"| {text(w['name'])} | {w['accuracy']:.3f} | {w['support']} | "
        + ", ".join(f"{text(c['name'])} ({c['count']})" for c in w["confused_with"])
        + " |"
        for w in metrics["worst_classes"]
    )
    verdict = "PASSED" if gate["passed"] else "FAILED"
    create_markdown_artifact(
        f"## Center-crop evaluation\n\ntop-1 **{metrics['top1']:.4f}**, "
        f"top-{metrics['top5_k']} **{metrics['top5']:.4f}** on {metrics['count']} images\n\n"
        f"### Gate {verdict}\n\n{text(gate['reason'])}\n\n{paired_tables(gate)}"
        "### Worst classes\n\n"
        f"| class | accuracy | images | confused with |\n|---|---|---|---|\n{worst}\n"
        + (
            f"\nPer-class accuracy and the worst classes' confusions: {code(metrics['figure'])}, "
            "with a tracking server also linked from the run summary (its copy in the MLflow run)\n"
            if metrics.get("figure")
            else ""
        ),
        key="evaluation",
        description=f"top-1 {metrics['top1']:.4f}; gate {verdict.lower()}",
    )


def publish_registration(result: dict, ui_url: str | None) -> None:
    if result["version"] is None:
        create_markdown_artifact(
            f"Not registered: {text(result['gate']['reason'])}", key="registered-model"
        )
        return
    name, version = result["model_name"], result["version"]
    champion = result.get("alias") == "champion"
    if ui_url:
        create_link_artifact(
            f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}",
            link_text=text(f"{name} v{version}" + (" (@champion)" if champion else "")),
            key="registered-model",
            description="the new champion in the MLflow Model Registry"
            if champion
            else "registered in the MLflow Model Registry; the champion stays (see the gate)",
        )
    else:
        create_markdown_artifact(
            f"Registered **{text(name)} v{version}**"
            + (" as `@champion`" if champion else ", not as champion,")
            + f" in {code(result['tracking_uri'])}",
            key="registered-model",
        )


def _link(label: str, url: str | None) -> str:
    return link(label, url) if url else text(label)


def publish_summary(report: dict, mlflow_ui: str | None) -> None:
    """One flow-level artifact: each stage's outcome and time, the result, and where to look."""
    seconds = report.get("seconds", {})
    failed = report.get("failed") or {}
    decision = report.get("decision") or {}
    rows = []
    for stage, outcome in stage_outcomes(report):
        time = f"{seconds[stage]:.1f} s" if stage in seconds else ""
        rows.append(f"| {stage} | {text(outcome)} | {time} |")
    registry = report.get("registry") or {}
    name, version = registry.get("model_name"), registry.get("version")
    train = report.get("train") or {}
    skipped = decision.get("train") is False
    title = f"FAILED at {failed['stage']}" if failed else "Completed"
    title += ": nothing new to train on" if skipped and not failed else ""
    lines = [
        f"## {title}",
        "",
        f"**{text(failed['reason'])}**"
        if failed
        else (f"**{text(decision['reason'])}**" if skipped else ""),
        f"\nWhat to do: {text(failed['hint'])}" if failed.get("hint") else "",
        "",
        "| stage | outcome | time |",
        "|---|---|---|",
        *rows,
        "",
    ]
    ui = mlflow_ui.rstrip("/") if mlflow_ui else None
    links = report.get("links") or {}
    if train.get("mlflow_run_id"):
        experiment = train.get("mlflow_experiment_id", "0")
        run_url = f"{ui}/#/experiments/{experiment}/runs/{train['mlflow_run_id']}" if ui else None
        lines.append(f"- MLflow run (settings, files): {_link(train['mlflow_run_id'], run_url)}")
    elif links.get("run"):
        lines.append(f"- MLflow run (this run's pages): {_link('open', links['run'])}")
    if version:
        model_url = f"{ui}/#/models/{quote(name, safe='')}/versions/{version}" if ui else None
        lines.append(f"- Registered model: {_link(f'{name} v{version}', model_url)}")
    # Over HTTP from the MLflow server when it took them; otherwise where they lie.
    page = (report.get("validate") or {}).get("statistics_html")
    for key, label, fallback in (
        ("statistics", "Data statistics", page),
        ("drift", "Drift and skew", None),
        ("evaluation", "Evaluation picture", (report.get("evaluate") or {}).get("figure")),
        ("curves", "Training curves", None),
        ("report", "Report", report.get("report_path", "report.json")),
    ):
        if links.get(key):
            lines.append(f"- {label}: {_link('open', links[key])}")
        elif fallback:
            lines.append(f"- {label}: {code(fallback)}")
    create_markdown_artifact(
        "\n".join(lines),
        key="run-summary",
        description=text(failed.get("reason", "") or summary_line(report)),
    )


def stage_outcomes(report: dict) -> list[tuple[str, str]]:
    """(stage, one-line outcome) for each stage the run reached."""
    out = []
    ingest = report.get("ingest")
    if ingest:
        records = ingest["records"]
        out.append(
            (
                "ingest",
                f"{records['train']:,} train / {records['validation']:,} validation records, "
                f"{ingest['quarantined']} quarantined" + (" (reused)" if ingest["reused"] else ""),
            )
        )
    decision = report.get("decision")
    if decision:
        verdict = "train" if decision["train"] else "skip"
        out.append(("champion", f"{verdict}: {decision['reason']}"))
    validate = report.get("validate")
    if validate:
        found = len(validate["anomalies"])
        outcome = "no anomalies" if validate["passed"] else f"{found} anomalies"
        drifted = [row for row in report.get("drift") or [] if row["drifted"]]
        if drifted:
            accepted = " (accepted)" if validate["passed"] else ""
            outcome += f"; {len(drifted)} distances past their thresholds{accepted}"
        out.append(("validate", outcome))
    train = report.get("train")
    if train:
        out.append(
            (
                "train",
                f"{train['steps']} steps ({train['precision']})"
                + (f", resumed from {train['resumed_from']}" if train["resumed_from"] else ""),
            )
        )
    evaluation = report.get("evaluate")
    if evaluation:
        out.append(("evaluate", f"top-1 {evaluation['top1']:.4f}, top-5 {evaluation['top5']:.4f}"))
    gate = report.get("gate")
    if gate:
        out.append(
            ("gate_and_register", f"{'passed' if gate['passed'] else 'refused'}: {gate['reason']}")
        )
    failed = report.get("failed")
    if failed and failed["stage"] not in {stage for stage, _ in out}:
        out.append((failed["stage"], f"failed: {failed['reason']}"))
    return out


def summary_line(report: dict) -> str:
    decision = report.get("decision") or {}
    if decision.get("train") is False:
        return decision["reason"]
    evaluation, gate = report.get("evaluate"), report.get("gate")
    if not evaluation or not gate:
        return "incomplete"
    version = (report.get("registry") or {}).get("version")
    return f"top-1 {evaluation['top1']:.4f}; gate {'passed' if gate['passed'] else 'refused'}" + (
        f"; registered v{version}" if version else ""
    )
