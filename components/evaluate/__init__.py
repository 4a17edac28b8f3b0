"""Evaluation, gate and registration.

    python -m components.evaluate --data DATA_DIR --servable SERVABLE --output OUT \
        [--model-name NAME --set min_top1=0.5 --set max_regression=0.005]

Evaluates the servable on the center-crop validation set, compares it with the registry's champion
on the same data, and registers it as the new champion only when the gate passes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from components import atomic, events
from components.dataset import locked, read_labels, read_metadata
from components.evaluate.evaluation import (
    evaluate_servable,
    load_outcomes,
    load_servable,
    outcomes,
    predict_records,
    save_outcomes,
    summarize,
)
from components.evaluate.figures import draw_evaluation
from components.evaluate.gate import Best, GateConfig, GateDecision, Outcomes, decide
from components.evaluate.registry import (
    CHAMPION,
    PROMOTE_TAG,
    SETTLE_AFTER_TAG,
    Registry,
    RegistryError,
    label_fingerprint,
    validation_fingerprint,
)

__all__ = [
    "CHAMPION",
    "GateConfig",
    "GateDecision",
    "RegistryError",
    "evaluate",
    "gate_and_register",
]
log = logging.getLogger(__name__)
COMPONENT = "evaluate"
# A champion that moves while the gate compares (another run promoted one) is compared again,
# at most this many times; then the gate refuses rather than promote on a stale comparison.
MAX_COMPARISONS = 3
OUTCOMES = "outcomes.npz"


def evaluate(
    data_dir: str,
    servable_path: str,
    output_dir: str,
    on_event: events.OnEvent | None = None,
    batch_size: int = 64,
) -> dict:
    """Evaluates the servable; writes and returns evaluation.json's content. Progress goes to
    `on_event` (components/events.py; default: this module's logger). The dataset is held
    against rewriting meanwhile (components/dataset.py)."""
    on_event = on_event or events.log_to(log)
    with locked(data_dir, False, lambda m: on_event(events.stage(COMPONENT, m))):
        return _evaluate(data_dir, servable_path, output_dir, on_event, batch_size)


def _evaluate(
    data_dir: str, servable_path: str, output_dir: str, on_event: events.OnEvent, batch_size: int
) -> dict:
    names = read_labels(data_dir)
    total = int(read_metadata(data_dir)["records"]["validation"])
    on_event(
        events.stage(COMPONENT, f"evaluating {servable_path} on {total:,} center-cropped images")
    )

    def on_batch(done: int) -> None:
        on_event(events.progress(COMPONENT, done, total, "images", level=logging.DEBUG))

    labels, probabilities, spans, leaked = predict_records(
        load_servable(servable_path), data_dir, batch_size, on_batch=on_batch
    )
    metrics = summarize(labels, probabilities, names)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Each image's outcome, for the gate to pair with the champion's on the same images.
    save_outcomes(out / OUTCOMES, outcomes(labels, probabilities, spans, leaked))
    if leaked.any() and not leaked.all():  # scored on every image; the gate leaves the copies out
        metrics["leaked"] = int(leaked.sum())
        metrics["top1_without_leaked"] = float(
            np.mean(probabilities.argmax(axis=1)[~leaked] == labels[~leaked])
        )
    metrics["outcomes"] = str(out / OUTCOMES)
    metrics["figure"] = draw_evaluation(
        labels, probabilities.argmax(axis=1), names, str(out / "evaluation.png")
    )
    atomic.write_json(out / "evaluation.json", metrics)
    on_event(
        events.stage(
            COMPONENT,
            f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} on {metrics['count']:,} "
            "images",
        )
    )
    return metrics


def _judged_top1(found: Outcomes) -> float:
    """Top-1 as the gate judges it: without the images that copy training images."""
    if found.leaked is None or not found.leaked.any() or found.leaked.all():
        return found.top1
    return found.without(found.leaked).top1


def _challenger_outcomes(metrics: dict, output_dir: str) -> Outcomes:
    """The evaluated model's per-image outcomes, which `evaluate` kept beside its metrics."""
    path = Path(metrics.get("outcomes") or Path(output_dir) / OUTCOMES)
    if not path.is_file():
        raise ValueError(
            f"{path}: the evaluation's per-image outcomes are missing; the gate pairs them with "
            "the champion's on the same images: evaluate again"
        )
    return load_outcomes(path)


def keras_file_beside(servable_path: str) -> str | None:
    """The classifier's Keras file, which training writes next to the servable (teachers are
    loaded from it); None for a training folder from before it did."""
    if "://" in servable_path:  # a bucket: Path would mangle the scheme, and it cannot stat it
        import tensorflow as tf

        remote = f"{servable_path.rstrip('/').rsplit('/', 1)[0]}/model.keras"
        return remote if tf.io.gfile.exists(remote) else None
    path = Path(servable_path.rstrip("/")).parent / "model.keras"
    return str(path) if path.is_file() else None


def gate_and_register(
    data_dir: str,
    servable_path: str,
    output_dir: str,
    metrics: dict,
    model_name: str,
    gate: GateConfig,
    params: dict | None = None,
    tags: dict | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> dict:
    """Gates the evaluated servable against the champion; registers it only if the gate passes.

    Returns {"gate": {...}, "run_id", "model_name", "version" (None unless registered),
    "tracking_uri"}; also written to OUT/registration.json. With `run_id` (the training's MLflow
    run), the evaluation and the decision are logged into that run instead of a new one, and a
    training that an earlier gate already registered is not registered twice. The dataset is
    held against rewriting meanwhile (components/dataset.py).
    """
    with locked(data_dir, False, lambda m: log.info("%s", m)):
        return _gate_and_register(
            data_dir, servable_path, output_dir, metrics, model_name, gate, params, tags,
            tracking_uri, run_id,
        )  # fmt: skip


def _gate_and_register(
    data_dir: str,
    servable_path: str,
    output_dir: str,
    metrics: dict,
    model_name: str,
    gate: GateConfig,
    params: dict | None,
    tags: dict | None,
    tracking_uri: str | None,
    run_id: str | None,
) -> dict:
    registry = Registry(tracking_uri)
    labels_id = label_fingerprint(data_dir)
    validation_id = validation_fingerprint(data_dir)
    names = read_labels(data_dir)
    same_data = {"validation_fingerprint": validation_id, "label_fingerprint": labels_id}
    try:
        registry.reconcile(model_name)  # a gate that died before settling: settled first
    except RegistryError as err:
        raise RegistryError(f"{err} (settling an earlier, unsettled version)") from err
    earlier = registry.version_of_run(model_name, run_id, servable_path) if run_id else None
    if earlier is not None:  # registered, then the run died or failed before it was recorded
        champion_now = registry.champion_version(model_name)
        result = {
            "gate": GateDecision(
                True,
                f"this training was already registered as v{earlier} by an earlier run (judged "
                "then); it is not registered twice",
            ).to_dict(),
            "run_id": run_id,
            "model_name": model_name,
            "version": earlier,
            "alias": CHAMPION if champion_now == earlier else None,
            "tracking_uri": registry.tracking_uri,
        }
        atomic.write_json(Path(output_dir) / "registration.json", result)
        return result
    started_after = registry.latest_version(model_name)

    challenger = _challenger_outcomes(metrics, output_dir)

    def scored(version: str) -> Outcomes:
        with registry.load_version(model_name, version) as servable:
            return evaluate_servable(servable, data_dir, names)["outcomes"]

    def champion_outcomes(version, sealed: dict) -> Outcomes | None:
        if sealed.get("label_fingerprint") != labels_id:
            return None  # a different label set: not comparable, decide() says why
        return scored(str(version.version))

    def judge() -> GateDecision:
        if _judged_top1(challenger) < gate.min_top1:  # fails whatever the registry holds
            return decide(challenger, labels_id, None, gate, class_names=names)
        best = registry.best(model_name, same_data)
        champion = registry.champion_info(model_name, champion_outcomes)
        if best is not None:  # the best ever, scored on these images too (paired)
            same = champion is not None and champion.version == best.version
            best = Best(
                best.version, best.top1, champion.outcomes if same else scored(best.version)
            )
        return decide(challenger, labels_id, champion, gate, best, class_names=names)

    decision: GateDecision = judge()
    for _ in range(MAX_COMPARISONS - 1):  # the champion may have moved during the comparison
        if (
            not decision.passed
            or registry.champion_version(model_name) == decision.champion_version
        ):
            break
        decision = judge()
    else:
        if decision.passed and registry.champion_version(model_name) != decision.champion_version:
            decision = GateDecision(
                False,
                f"the champion kept changing during {MAX_COMPARISONS} comparisons; not promoted",
            )

    out = Path(output_dir)
    run_tags = {
        **(tags or {}),
        "label_fingerprint": labels_id,
        "validation_fingerprint": validation_id,
        "gate_passed": str(decision.passed),
        "gate_reason": decision.reason,
    }
    run_metrics = {
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "gate_passed": float(decision.passed),
    }
    if decision.champion_top1 is not None:
        run_metrics["champion_top1"] = decision.champion_top1
    for key in ("difference", "low", "high", "p_value", "detectable"):
        if decision.comparison and decision.comparison.get(key) is not None:
            run_metrics[f"gate_{key}"] = decision.comparison[key]
    # The whole decision (the pairs overall, per span, the classes that lost) beside the metrics.
    atomic.write_json(out / "gate.json", decision.to_dict())
    run_id = registry.log_run(
        f"trickflow-{model_name}",
        params or {},
        run_metrics,
        run_tags,
        [
            str(p)
            for p in (out / "evaluation.json", out / "evaluation.png", out / "gate.json")
            if p.exists()
        ],
        run_id=run_id,
    )
    version = champion_now = None
    # A gate whose margins are waived (the smoke preset) registers its model but moves no
    # champion: a test run cannot demote the model people use. The first model of a name has
    # no champion to demote.
    holds = decision.passed and gate.waived and decision.champion_version is not None
    if holds and gate.promote_waived:
        log.warning(
            "promote_waived: moving the champion of %r under a gate that waives %s",
            model_name, gate.waived,
        )  # fmt: skip
        holds = False
    if decision.passed:
        version_tags = {
            **run_tags,
            "top1": f"{metrics['top1']:.4f}",
            "top5": f"{metrics['top5']:.4f}",
            SETTLE_AFTER_TAG: str(started_after),
            PROMOTE_TAG: str(not holds),
        }
        model_file = keras_file_beside(servable_path)
        if model_file is None:
            log.warning(
                "no model.keras next to %s (trained before Keras files were kept): registering "
                "the servable alone; this version cannot be a teacher",
                servable_path,
            )
        version = registry.register(run_id, model_name, servable_path, version_tags, model_file)
        # Another gate may have promoted its model meanwhile: the better one stays champion.
        try:
            champion_now = registry.settle(model_name, started_after, same_data)
            registry.mark_settled(model_name, version)
        except RegistryError as err:
            err.version = version  # registered; only the alias could not be settled
            raise
        if holds:
            decision = replace(
                decision,
                reason=f"{decision.reason}; registered as v{version} without moving the "
                f"champion: this gate waives {gate.waived}, so v{champion_now} stays champion (a "
                "gate at its rules moves it; overrides.promote_waived: true moves it anyway, "
                "logged)",
            )
        elif champion_now != version:
            decision = replace(
                decision,
                reason=f"{decision.reason}; registered as v{version}, but v{champion_now}, "
                "promoted by a run that overlapped this one (a higher top-1, or other data), "
                "stays champion",
            )
    result = {
        "gate": decision.to_dict(),
        "run_id": run_id,
        "model_name": model_name,
        "version": version,
        "alias": CHAMPION if version and champion_now == version else None,
        "tracking_uri": registry.tracking_uri,
    }
    atomic.write_json(out / "registration.json", result)
    return result
