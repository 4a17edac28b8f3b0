"""Metrics, the gate's decisions, and registration against a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from components.evaluate.evaluation import summarize
from components.evaluate.gate import Best, Champion, GateConfig, Outcomes, decide
from components.evaluate.paired import paired
from tests.conftest import check_events


def test_summarize_top1_top5_per_class_and_confusions() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],  # class 0: both right
            [0.5, 0.4, 0.1],
            [0.1, 0.8, 0.1],  # class 1: one confused with 0
            [0.6, 0.3, 0.1],
            [0.5, 0.4, 0.1],  # class 2: both confused with 0, third choice
        ]
    )
    out = summarize(labels, probs, ["a", "b", "c"])
    assert out["top1"] == pytest.approx(3 / 6) and out["top5_k"] == 3 and out["top5"] == 1.0
    assert out["per_class_accuracy"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    worst = out["worst_classes"][0]
    assert worst["name"] == "c" and worst["confused_with"] == [
        {"label": 0, "name": "a", "count": 2}
    ]


def test_the_evaluation_picture_shows_where_the_worst_classes_went_at_1000_classes(
    tmp_path: Path,
) -> None:
    """An ILSVRC-shaped evaluation: 1,000 classes named as labels.txt names them, 3 validation
    images each, a weak model (30% right, the rest scattered) with two systematic confusions.
    The worst classes' bars say where their images went, by name: the systematic confusions
    first (they tie at 0% with hundreds of others), with their destinations and shares."""
    from components.evaluate.figures import draw_evaluation, evaluation_figure, where_they_went

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1000), 3)
    predictions = np.where(rng.random(3000) < 0.3, labels, rng.integers(0, 1000, 3000))
    predictions[labels == 281] = 282  # every "tabby" went to "tiger cat"
    predictions[labels == 5] = [147, 147, 900]
    names = [f"synset {c}, another name" for c in range(1000)]
    names[281], names[282] = "tabby, tabby cat", "tiger cat"
    names[147], names[900] = "grey whale, gray whale, devilfish", "water tower"

    rows = where_they_went(labels, predictions, 1000)
    assert len(rows) == 15 and all(r["accuracy"] == 0 for r in rows)
    assert rows[0] == {
        "label": 281, "support": 3, "accuracy": 0.0, "destinations": [(282, 1.0)], "rest": 0.0
    }  # fmt: skip
    assert rows[1]["label"] == 5 and rows[1]["destinations"] == [(147, 2 / 3), (900, 1 / 3)]
    for row in rows:  # every destination really took that share of the class's images
        taken = predictions[labels == row["label"]]
        for label, share in row["destinations"]:
            assert share == pytest.approx(np.mean(taken == label))
        assert sum(s for _, s in row["destinations"]) + row["rest"] == pytest.approx(1.0)

    figure = evaluation_figure(labels, predictions, names)
    right = figure.axes[1]
    texts = [t.get_text() for t in right.texts]
    assert texts[0] == "→ tiger cat 100%" and texts[1] == "→ grey whale 67%, water tower 33%"
    ticks = [t.get_text() for t in right.get_yticklabels()]
    assert ticks[0] == "tabby (0% of 3)" and len(ticks) == 15
    path = draw_evaluation(labels, predictions, names, str(tmp_path / "e.png"))
    assert Path(path).stat().st_size > 10_000


def test_summarize_refuses_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels.txt"):
        summarize(np.array([0]), np.ones((1, 3)) / 3, ["a", "b"])


GATE = GateConfig(min_top1=0.5, max_regression=0.01)


def _pair(n: int, both: int, only_new: int, only_old: int, seed: int = 0, labels=None, spans=None):
    """Challenger and champion outcomes on n images: `both` right for both, `only_new` right only
    for the challenger, `only_old` only for the champion, the rest wrong for both (shuffled)."""
    rest = n - both - only_new - only_old
    new = np.array([1] * both + [1] * only_new + [0] * only_old + [0] * rest, bool)
    old = np.array([1] * both + [0] * only_new + [1] * only_old + [0] * rest, bool)
    order = np.random.default_rng(seed).permutation(n)
    labels = np.zeros(n, np.int64) if labels is None else labels
    return (
        Outcomes(new[order], labels, spans),
        Outcomes(old[order], labels, spans),
    )


@pytest.mark.parametrize(
    ("b", "c", "n"), [(6, 5, 355), (0, 15, 355), (40, 10, 2000), (120, 80, 50_000), (0, 0, 100)]
)
def test_the_paired_interval_and_test_match_the_exact_binomial_reference(b, c, n) -> None:
    """McNemar's exact test is the binomial test on the discordant pairs; the interval is the
    Clopper-Pearson interval of b/(b+c) mapped to the difference in top-1 (scipy as reference)."""
    from scipy.stats import binomtest

    new, old = _pair(n, n // 2, b, c)
    result = paired(new.correct, old.correct, 0.95)
    assert (result.only_challenger, result.only_baseline) == (b, c)
    assert result.difference == pytest.approx((b - c) / n)
    if b + c:
        reference = binomtest(b, b + c, 0.5)
        ci = reference.proportion_ci(0.95, method="exact")
        scale = (b + c) / n
        assert result.low == pytest.approx(scale * (2 * ci.low - 1), abs=1e-9)
        assert result.high == pytest.approx(scale * (2 * ci.high - 1), abs=1e-9)
        assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
        assert result.significant == (not result.low <= 0 <= result.high)  # the same verdict
    # The smallest detectable difference: that split rejects, one image more even does not.
    m = b + c
    if result.detectable is not None:
        k = round(result.detectable * n)  # |b - c| at the edge
        assert binomtest((m + k) // 2, m, 0.5).pvalue < 0.05
        assert binomtest((m + k) // 2 - 1, m, 0.5).pvalue >= 0.05
    else:
        assert m == 0 or binomtest(m, m, 0.5).pvalue >= 0.05


@pytest.mark.parametrize(
    ("pair", "champion_labels", "config", "passed", "words"),
    [
        (_pair(100, 40, 0, 0), "L", GATE, False, "below the floor"),
        # Noise on 355 images: the interval (-1.65 to +2.06 points) is too wide to show that
        # the challenger is no worse than 1 point: the champion stays.
        (_pair(355, 340, 6, 5), "L", GATE, False, "not distinguishable"),
        # The same share of noise on 20,000 images: shown within the margin, promoted.
        (_pair(20_000, 19_000, 60, 55), "L", GATE, True, "not distinguishable"),
        (_pair(20_000, 19_000, 60, 55), "L", GATE.model_copy(update={"promote": "better"}),
         False, "not shown better"),  # ... but not under `promote: better`
        (_pair(355, 300, 30, 5), "L", GATE.model_copy(update={"promote": "better"}), True,
         "significantly better"),
        (_pair(355, 330, 0, 12), "L", GATE, False, "not shown to be no worse"),
        (_pair(355, 330, 5, 5), "OTHER", GATE, False, "different label set"),
        (_pair(355, 330, 5, 5), "OTHER", GATE.model_copy(update={"allow_label_change": True}),
         True, "replacing it as allowed"),
    ],
)  # fmt: skip
def test_gate_decisions(pair, champion_labels, config, passed, words) -> None:
    new, old = pair
    decision = decide(new, "L", Champion("3", champion_labels, old), config)
    assert decision.passed is passed and words in decision.reason, decision.reason
    if champion_labels == "L" and new.top1 >= config.min_top1:
        # The reason names the counts, the difference and its interval.
        assert "95% interval" in decision.reason and "images only the challenger" in decision.reason
        assert decision.comparison["n"] == len(new.correct)


def test_the_first_model_and_the_reason_in_words() -> None:
    new, old = _pair(355, 343, 6, 5)
    assert "first model" in decide(new, "L", None, GATE).reason
    reason = decide(new, "L", Champion("1", "L", old), GATE).reason
    assert reason.startswith("not shown to be no worse: challenger 0.9831 vs champion v1 0.9803 on "
                             "the same 355 images: "
                             "+0.28 points, 95% interval ")  # fmt: skip
    assert "6 images only the challenger got right, 5 only the champion v1: not " in reason
    assert reason.endswith(
        "the interval reaches below -1.00 points (non-inferiority, margin 1.00 points)"
    )


def test_an_average_that_rises_while_one_class_falls_is_refused_by_name() -> None:
    """Ten classes of 40 images: nine gain, one (`tabby`) loses 30 points (12 of its 40)."""
    labels = np.repeat(np.arange(10), 40)
    new = np.zeros(400, bool)
    old = np.zeros(400, bool)
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        old[rows[:30]] = True
        if c == 3:
            new[rows[:18]] = True  # 30 -> 18 right: -30 points
        else:
            new[rows[:33]] = True  # 30 -> 33: +7.5 points
    names = [f"class{c}" for c in range(10)]
    names[3] = "tabby"
    challenger, champion = Outcomes(new, labels), Outcomes(old, labels)
    assert challenger.top1 > champion.top1
    config = GateConfig(max_regression=0.01)
    decision = decide(challenger, "L", Champion("2", "L", champion), config, class_names=names)
    assert not decision.passed
    assert "a class fell by more than 10 points: class tabby -30.00 points on its 40 images" in (
        decision.reason
    )
    assert decision.classes[0]["name"] == "tabby"
    # Without that class's fall, the same gain passes.
    new[np.flatnonzero(labels == 3)[:33]] = True
    assert decide(Outcomes(new, labels), "L", Champion("2", "L", champion), config).passed


def test_a_newer_span_that_improves_cannot_hide_an_older_span_that_fell() -> None:
    """A warm start on the newest span: +12 points there, -8 points on the older span."""
    spans = np.array(["2026-11"] * 300 + ["2026-12"] * 500, dtype=object)
    labels = np.arange(800) % 20  # 40 images a class: no class falls far on its own
    old = np.zeros(800, bool)
    new = np.zeros(800, bool)
    old[:240] = True  # older span: 80% -> 72%
    new[:216] = True
    old[300:650] = True  # newest span: 70% -> 82%
    new[300:710] = True
    challenger, champion = Outcomes(new, labels, spans), Outcomes(old, labels, spans)
    assert challenger.top1 > champion.top1
    decision = decide(challenger, "L", Champion("4", "L", champion), GateConfig())
    assert not decision.passed
    assert "span fell by more than 2 points: span 2026-11 -8.00 points on its 300 images" in (
        decision.reason
    )
    assert {s["group"]: round(s["difference"], 4) for s in decision.spans} == {
        "2026-11": -0.08, "2026-12": 0.12,
    }  # fmt: skip


def test_validation_images_that_copy_training_images_are_left_out_of_the_comparison() -> None:
    """The challenger is better only on 20 validation images that copy training images (it
    memorised them): without them it is 10 images worse, and refused; the reason says how many
    were left out, and top-1 with and without them."""
    n = 400
    labels = np.zeros(n, np.int64)
    leaked = np.zeros(n, bool)
    leaked[:20] = True
    old = np.zeros(n, bool)
    old[20:340] = True
    new = old.copy()
    new[:20] = True  # right on every copy
    new[330:340] = False  # and worse on 10 real ones
    challenger = Outcomes(new, labels, None, leaked)
    assert challenger.top1 > Outcomes(old, labels).top1
    decision = decide(challenger, "L", Champion("1", "L", Outcomes(old, labels, None, leaked)),
                      GATE)  # fmt: skip
    assert not decision.passed and decision.left_out == 20
    assert decision.reason.startswith(
        "left out 20 validation images that copy training images (top-1 0.8250 with them, "
        "0.8158 without); not shown to be no worse: challenger 0.8158 vs champion v1 0.8421 on "
        "the same 380 images"
    )
    everything = Outcomes(new, labels, None, np.ones(n, bool))
    assert "nothing to judge on" in decide(everything, "L", None, GATE).reason


DRIFT = GateConfig(min_top1=0.5, max_regression=0.01, max_drop_from_best=0.02)


def test_slightly_worse_retrains_cannot_walk_the_champion_down() -> None:
    """Each retrain gains 20 images and loses 30 against the champion it replaces (-0.25 points
    on 4,000 images, inside the margin each time); the best-ever floor, paired on the same
    images, stops the walk before it is 2 points below the best."""
    rng = np.random.default_rng(0)
    labels = np.zeros(4000, np.int64)
    first = np.zeros(4000, bool)
    first[rng.permutation(4000)[:3200]] = True
    best = Best("1", 0.80, Outcomes(first, labels))
    champion, promoted = Champion("1", "L", Outcomes(first, labels)), [0.80]
    for version in range(2, 40):
        now = champion.outcomes.correct.copy()
        now[rng.choice(np.flatnonzero(now), 30, replace=False)] = False
        now[rng.choice(np.flatnonzero(~champion.outcomes.correct), 20, replace=False)] = True
        decision = decide(Outcomes(now, labels), "L", champion, DRIFT, best)
        if not decision.passed:
            assert "best-ever floor" in decision.reason and "best v1" in decision.reason
            break
        champion = Champion(str(version), "L", Outcomes(now, labels))
        promoted.append(float(now.mean()))
    else:
        raise AssertionError("the walk was never stopped")
    assert min(promoted) >= best.top1 - DRIFT.max_drop_from_best
    assert len(promoted) > 1  # each step alone is within the margin


@pytest.mark.integration
def test_register_then_compare_against_the_champion(
    small_model, ingested: Path, tmp_path: Path, monkeypatch
) -> None:
    from components.evaluate import evaluate, gate_and_register
    from components.evaluate.registry import Registry
    from components.train import TrainConfig, run_training

    config = TrainConfig(
        model="darknet53-tiny",
        image_size=32,
        batch_size=8,
        epochs=1,
        warmup_steps=1,
        eval_every_epochs=0,
        shuffle_buffer=64,
    )
    servable = run_training(config, str(ingested), str(tmp_path / "train"))["servable"]
    before = set(Path(tempfile.gettempdir()).glob("champion-*"))
    reported = []
    metrics = evaluate(str(ingested), servable, str(tmp_path / "eval"), reported.append, 5)
    assert [e["done"] for e in reported if e["type"] == "progress"] == [5, 10, 12]
    assert check_events(reported, "evaluate")[-1] == (
        f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} on 12 images"
    )
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["count"] == 12

    first = gate_and_register(
        str(ingested),
        servable,
        str(tmp_path / "eval"),
        metrics,
        "tiny",
        GateConfig(),
        tags={"flow_run_id": "a"},
    )
    assert first["gate"]["passed"] and first["version"] == "1" and first["alias"] == "champion"
    assert (tmp_path / "eval" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {a.path for a in Registry().client.list_artifacts(first["run_id"])}
    assert {"evaluation.json", "evaluation.png", "gate.json"} <= logged

    # Same model again: compared with the champion re-evaluated on the same data, so equal.
    second = gate_and_register(
        str(ingested),
        servable,
        str(tmp_path / "eval"),
        metrics,
        "tiny",
        GateConfig(max_regression=0.0),
    )
    assert second["gate"]["passed"] and second["version"] == "2"
    assert second["gate"]["champion_top1"] == pytest.approx(metrics["top1"])

    # A challenger worse than the champion on its images is refused. The gate judges the
    # per-image outcomes evaluation kept, not a claimed number: a claimed top-1 changes nothing.
    from components.evaluate.evaluation import load_outcomes, save_outcomes

    kept = load_outcomes(tmp_path / "eval" / "outcomes.npz")
    (tmp_path / "worse").mkdir()
    worse_outcomes = np.zeros_like(kept.correct)  # every image wrong
    save_outcomes(tmp_path / "worse" / "outcomes.npz", replace(kept, correct=worse_outcomes))
    claims_more = {**metrics, "top1": 1.0, "outcomes": str(tmp_path / "worse" / "outcomes.npz")}
    third = gate_and_register(
        str(ingested),
        servable,
        str(tmp_path / "worse"),
        claims_more,
        "tiny",
        GateConfig(max_regression=0.01),
    )
    assert not third["gate"]["passed"] and third["version"] is None
    assert kept.correct.any() and "interval reaches below -1.00 points" in third["gate"]["reason"]
    registry = Registry()
    champion = registry.champion("tiny")
    assert str(champion.version) == "2" and "flow_run_id" not in champion.tags  # v1 had it
    assert registry.client.get_run(third["run_id"]).data.tags["gate_passed"] == "False"

    import mlflow

    model = registry.load_pyfunc("tiny")  # verified first; the champion by default
    import tensorflow as tf

    record = next(iter(tf.data.TFRecordDataset(str(ingested / "validation-00000-of-00001"))))
    jpeg = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})
    probabilities = model.predict(np.array([jpeg["image"].numpy()], dtype=object))
    assert probabilities.shape == (1, 3)
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("champion-*") if p not in before]
    assert not leftovers  # every downloaded champion copy was removed

    # A registry that fails to answer the champion question is a fault, not "no champion".
    from unittest import mock

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from components.evaluate import RegistryError

    versions = len(registry.client.search_model_versions("name = 'tiny'"))
    outage = MlflowException("503 Service Unavailable", error_code="TEMPORARILY_UNAVAILABLE")
    with mock.patch.object(MlflowClient, "get_model_version_by_alias", side_effect=outage):
        with pytest.raises(RegistryError, match="get_model_version_by_alias"):
            gate_and_register(
                str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
            )
    assert len(registry.client.search_model_versions("name = 'tiny'")) == versions

    # A gate killed between registering and settling (here: interrupted as it settles) leaves
    # a passed version out of the champion's place; the next gate, whatever it decides about
    # its own model, settles that one first.
    better = {**metrics, "top1": min(1.0, metrics["top1"] + 0.2)}
    with (
        mock.patch.object(Registry, "settle", side_effect=KeyboardInterrupt),
        pytest.raises(KeyboardInterrupt),
    ):
        gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), better, "tiny", GateConfig()
        )
    orphan = str(registry.latest_version("tiny"))
    assert str(registry.champion("tiny").version) == "2"
    assert registry.client.get_model_version("tiny", orphan).tags["settle_after"] == "2"
    refused = gate_and_register(
        str(ingested), servable, str(tmp_path / "worse"), claims_more, "tiny",
        GateConfig(max_regression=0.01),
    )  # fmt: skip
    assert refused["version"] is None
    assert str(registry.champion("tiny").version) == orphan
    assert registry.client.get_model_version("tiny", orphan).tags["settled"] == "True"

    # The gate runs the champion's graph: a champion whose files were changed in the registry
    # (anyone who can write there could plant a SavedModel) is refused before it is loaded, and
    # so is one the gate never sealed.
    from components.evaluate import seal

    tags = registry.client.get_model_version("tiny", orphan).tags
    manifest = json.loads(tags[seal.MANIFEST_TAG])
    assert tags[seal.SEAL_TAG].startswith("sha256:")  # no key in this process yet
    assert {"model/MLmodel", "model/tf2model/saved_model.pb", "keras/model.keras"} <= set(
        manifest["files"]
    )
    assert manifest["tags"]["gate_passed"] == "True" and manifest["tags"]["top1"] == tags["top1"]
    stored = list((tmp_path / "mlflow" / "artifacts").rglob("tf2model/saved_model.pb"))
    assert stored
    originals = {path: path.read_bytes() for path in stored}
    for path, data in originals.items():
        path.write_bytes(data + b"\0")
    with pytest.raises(RegistryError, match="files differ from those sealed at registration"):
        gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
        )
    for path, data in originals.items():
        path.write_bytes(data)
    registry.client.delete_model_version_tag("tiny", orphan, seal.SEAL_TAG)
    with pytest.raises(RegistryError, match="carries no seal"):
        gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
        )
    # A person who knows the version is theirs vouches for it; the gate loads it again.
    from components.evaluate import trust

    assert trust.main(["--model-name", "tiny", "--version", orphan]) == 0
    # (the challenger's true top-1 clears the floor, so the champion is loaded to compare)
    gate_and_register(
        str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
    )

    # With the stack's registry key, a seal anyone could compute (the plain SHA-256 above) no
    # longer passes: only a holder of the key can vouch.
    champion = str(registry.champion("tiny").version)
    monkeypatch.setenv("TRICKFLOW_REGISTRY_KEY", "a-secret")
    with pytest.raises(RegistryError, match="its seal was made without a key"):
        gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
        )
    assert trust.main(["--model-name", "tiny", "--version", champion]) == 0
    tag = registry.client.get_model_version("tiny", champion).tags[seal.SEAL_TAG]
    assert tag.startswith("hmac-sha256:")
    lenient = GateConfig(max_drop_from_best=1.0)  # v3 claimed 0.2 more than the model has
    sealed_run = gate_and_register(
        str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", lenient
    )
    assert sealed_run["gate"]["passed"], sealed_run["gate"]
    honest = sealed_run["version"]
    gate_and_register(  # a newer champion: `honest` is now just a sealed version
        str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", lenient
    )

    # Someone with write access plants a version tagged as a passed, settled-to-be, perfect
    # model on this data (the files are a real model's: only the seal is missing), and forges a
    # perfect top-1 on an honest version. The next gate neither promotes the plant (reconcile)
    # nor measures against the forged best-ever; nothing loads the plant.

    planted_tags = {
        **{k: v for k, v in registry.client.get_model_version("tiny", honest).tags.items()
           if k not in seal.UNSEALED},
        "top1": "1.0000", "gate_passed": "True", "settle_after": "0",
    }  # fmt: skip
    planted = str(
        mlflow.register_model(f"runs:/{sealed_run['run_id']}/model", "tiny", tags=planted_tags)
        .version
    )  # fmt: skip
    registry.client.set_model_version_tag("tiny", honest, "top1", "1.0000")
    # v3's claimed 0.53 is within 0.3 of this model's 0.33; the forged 1.0 would not be
    strict = GateConfig(max_regression=0.5, max_drop_from_best=0.3)
    judged = gate_and_register(
        str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", strict
    )
    assert judged["gate"]["passed"], judged["gate"]  # no forged 1.0 as the best ever
    assert str(registry.champion("tiny").version) == judged["version"] != planted
    assert registry.best("tiny", {}).version not in (planted, honest)
    labels = manifest["tags"]["label_fingerprint"]
    for load in (
        lambda: registry.teacher_file("tiny", planted, labels, str(tmp_path / "t.keras"), "start"),
        lambda: registry.load_pyfunc("tiny", planted),
        lambda: registry.teacher_file("tiny", honest, labels, str(tmp_path / "t.keras")),
    ):
        with pytest.raises(RegistryError, match="is not loaded: (it carries no seal|its tags)"):
            load()
    assert not (tmp_path / "t.keras").exists()
    registry.client.set_registered_model_alias("tiny", "champion", planted)  # moved by hand
    with pytest.raises(RegistryError, match=f"'tiny' v{planted} .* is not loaded"):
        gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), metrics, "tiny", GateConfig()
        )
    served = registry.load_pyfunc("tiny", judged["version"])  # a sealed one serves
    assert served.predict(np.array([jpeg["image"].numpy()], dtype=object)).shape == (1, 3)


def test_no_champion_only_when_the_registry_says_so(tmp_path: Path) -> None:
    from components.evaluate.registry import Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert registry.champion("nobody") is None  # no such model
    registry.client.create_registered_model("empty")
    assert registry.champion("empty") is None  # a model without the alias
    assert registry.best("empty", {"validation_fingerprint": "x"}) is None


@pytest.mark.integration
def test_a_registered_version_keeps_its_keras_file_for_teachers(
    small_model, ingested: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Registration keeps model.keras; `teacher_file` fetches it for the same label set only,
    and a training folder without one registers the servable alone."""
    import logging

    from components.evaluate import RegistryError, evaluate, gate_and_register
    from components.evaluate.registry import KERAS_TAG, Registry, label_fingerprint
    from components.train import TrainConfig, run_training
    from components.train.loop import load_teacher

    config = TrainConfig(
        model="darknet53-tiny",
        image_size=32,
        batch_size=8,
        epochs=1,
        warmup_steps=1,
        eval_every_epochs=0,
        shuffle_buffer=64,
    )
    servable = run_training(config, str(ingested), str(tmp_path / "train"))["servable"]
    metrics = evaluate(str(ingested), servable, str(tmp_path / "eval"))
    first = gate_and_register(
        str(ingested), servable, str(tmp_path / "eval"), metrics, "teach", GateConfig()
    )
    assert first["version"] == "1" and first["alias"] == "champion"
    registry = Registry()
    assert registry.client.get_model_version("teach", "1").tags[KERAS_TAG] == "keras/model.keras"

    labels = label_fingerprint(str(ingested))
    destination = tmp_path / "student" / "teacher.keras"
    path, version = registry.teacher_file("teach", "champion", labels, str(destination))
    assert (path, version) == (str(destination), "1")
    teacher = load_teacher(path, num_classes=3, image_size=32)  # what training does with it
    assert teacher.output_shape == (None, 3)
    assert not [p for p in destination.parent.iterdir() if p != destination]  # no leftovers
    assert registry.teacher_file("teach", "v1", labels, str(destination))[1] == "1"

    with pytest.raises(RegistryError, match="champion v1 of 'teach' was trained on another label"):
        registry.teacher_file("teach", "champion", "0" * 16, str(tmp_path / "other.keras"))
    assert not (tmp_path / "other.keras").exists()

    # A training folder from before model.keras was written: registered without it, and said.
    (tmp_path / "train" / "model.keras").rename(tmp_path / "kept.keras")
    with caplog.at_level(logging.WARNING, logger="components.evaluate"):
        second = gate_and_register(
            str(ingested), servable, str(tmp_path / "eval"), metrics, "teach", GateConfig()
        )
    assert second["version"] == "2" and "no model.keras next to" in caplog.text
    assert KERAS_TAG not in registry.client.get_model_version("teach", "2").tags
    with pytest.raises(RegistryError, match="version 2 of 'teach' was registered before Keras"):
        registry.teacher_file("teach", "2", labels, str(tmp_path / "old.keras"))


def test_teacher_file_refuses_what_cannot_be_a_teacher(tmp_path: Path) -> None:
    from components.evaluate import RegistryError, seal
    from components.evaluate.registry import CHAMPION, KERAS_TAG, LABELS_TAG, Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    destination = str(tmp_path / "teacher.keras")
    with pytest.raises(RegistryError, match="model 'nobody' has no champion.*without a teacher"):
        registry.teacher_file("nobody", "champion", "L", destination)
    client = registry.client
    client.create_registered_model("m")
    with pytest.raises(RegistryError, match="model 'm' has no champion"):
        registry.teacher_file("m", "champion", "L", destination)
    with pytest.raises(RegistryError, match="model 'm' has no version 7"):
        registry.teacher_file("m", "7", "L", destination)
    with pytest.raises(ValueError, match="'champion' or a version number"):
        registry.teacher_file("m", "latest", "L", destination)

    def sealed(tags: dict) -> dict:
        return {**tags, **seal.sealed_tags("m", None, str(tmp_path), {}, tags)}

    old = {LABELS_TAG: "L"}  # registered before Keras files were kept
    client.create_model_version("m", source=str(tmp_path), tags=sealed(old))
    with pytest.raises(RegistryError, match="version 1 of 'm' was registered before Keras files"):
        registry.teacher_file("m", "1", "L", destination)
    other = {LABELS_TAG: "OTHER", KERAS_TAG: "keras/model.keras"}
    client.create_model_version("m", source=str(tmp_path), tags=sealed(other))
    client.set_registered_model_alias("m", CHAMPION, "2")
    with pytest.raises(RegistryError, match="champion v2 of 'm' was trained on another label set"):
        registry.teacher_file("m", "champion", "L", destination)
    unsealed = {LABELS_TAG: "L", KERAS_TAG: "keras/model.keras"}  # right labels, no seal
    client.create_model_version("m", source=str(tmp_path), tags=unsealed)
    with pytest.raises(RegistryError, match="'m' v3 .* is not loaded: it carries no seal"):
        registry.teacher_file("m", "3", "L", destination)
    assert not Path(destination).exists()


_RACER = """
import json, sys, time
from pathlib import Path
from components.evaluate import GateConfig, gate_and_register
from components.evaluate.registry import Registry
data, servable, out, claim, delay = sys.argv[1:]
metrics = json.loads((Path(out).parent / "metrics.json").read_text())
register = Registry.register


def overlapping(self, *args, **kwargs):
    # The gates overlap for sure: neither registers before both have judged (a gate that starts
    # after another registered is a later gate, judged against that one: not this race).
    Path(out, "judged").touch()
    deadline = time.monotonic() + 240
    while len(list(Path(out).parent.glob("*/judged"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(delay))
    return register(self, *args, **kwargs)


Registry.register = overlapping
result = gate_and_register(data, servable, out, {**metrics, "top1": float(claim)}, "race",
                           GateConfig(max_regression=0.01, max_drop_from_best=0.01))
print(json.dumps(result))
"""


@pytest.mark.integration
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.cluster)])
def test_two_overlapping_gates_leave_the_better_model_as_champion(
    small_model, ingested: Path, tmp_path: Path, store: str, request, monkeypatch
) -> None:
    """Two processes gate models on one name at the same time: whichever moves the alias last,
    the better one ends as champion. On SQLite, and on the PostgreSQL registry a team's
    tracking server keeps (`infra/stack.sh db` starts one, as `TRICKFLOW_DB=postgres` does)."""
    import os
    import subprocess
    import sys

    if store == "postgres":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("postgres_registry"))
        monkeypatch.chdir(tmp_path)  # a database store keeps artifacts under ./mlruns

    from components.evaluate import evaluate, gate_and_register
    from components.evaluate.registry import Registry
    from components.train import TrainConfig, run_training

    config = TrainConfig(
        model="darknet53-tiny",
        image_size=32,
        batch_size=8,
        epochs=1,
        warmup_steps=1,
        eval_every_epochs=0,
    )
    servable = run_training(config, str(ingested), str(tmp_path / "train"))["servable"]
    metrics = evaluate(str(ingested), servable, str(tmp_path / "eval"))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    first = gate_and_register(
        str(ingested), servable, str(tmp_path / "eval"), metrics, "race", GateConfig()
    )
    assert first["version"] == "1"
    top1 = metrics["top1"]
    claims = {"better": top1 - 0.002, "worse": top1 - 0.004}  # both pass against v1
    env = dict(os.environ)  # the racers import the installed project, from any folder
    racers = {}
    for name in ("better", "worse"):  # the worse one registers later: it tends to move last
        (tmp_path / name).mkdir()
        (tmp_path / name / "evaluation.json").write_text(json.dumps(metrics))
        racers[name] = subprocess.Popen(
            [sys.executable, "-c", _RACER, str(ingested), servable, str(tmp_path / name),
             str(claims[name]), "0" if name == "better" else "0.5"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    results = {}
    for name, process in racers.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
        results[name] = json.loads(stdout.strip().splitlines()[-1])
    assert results["better"]["gate"]["passed"] and results["worse"]["gate"]["passed"]
    champion = Registry().champion("race")
    assert str(champion.version) == results["better"]["version"]
    assert float(champion.tags["top1"]) == pytest.approx(claims["better"], abs=1e-4)


def test_command_line_exits_non_zero_on_a_registry_fault(tmp_path: Path, capsys) -> None:
    from unittest import mock

    import components.evaluate.__main__ as cli
    from components.evaluate import RegistryError

    fault = RegistryError("registry http://127.0.0.1:5000: get_model_version_by_alias failed")
    metrics = {"top1": 0.9, "top5": 1.0, "count": 10}
    with (
        mock.patch.object(cli, "evaluate", return_value=metrics),
        mock.patch.object(cli, "gate_and_register", side_effect=fault),
    ):
        code = cli.main(["--data", "d", "--servable", "s", "--output", "o", "--model-name", "m"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing was registered" in err and "registry: " in err


def test_settle_crowns_the_best_racer_and_leaves_a_champion_of_other_data(tmp_path: Path) -> None:
    from components.evaluate import seal
    from components.evaluate.registry import CHAMPION, Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry.client
    client.create_registered_model("m")
    same = {"validation_fingerprint": "V", "label_fingerprint": "L"}

    def version(top1: float, tags: dict, sealed: bool = True) -> str:
        tags = {**tags, "gate_passed": "True", "top1": str(top1)}
        if sealed:  # as the gate registers them
            tags.update(seal.sealed_tags("m", None, str(tmp_path), {}, tags))
        return str(client.create_model_version("m", source=str(tmp_path), tags=tags).version)

    v1 = version(0.70, same)
    client.set_registered_model_alias("m", CHAMPION, v1)
    version(0.72, same)  # v2 and v3 raced after v1
    v3 = version(0.75, same)
    version(0.99, same, sealed=False)  # planted by someone who can write to the registry
    assert registry.settle("m", after=1, same=same) == v3
    assert str(registry.champion("m").version) == v3
    other = version(0.60, {**same, "validation_fingerprint": "NEW"})  # promoted meanwhile
    client.set_registered_model_alias("m", CHAMPION, other)
    assert registry.settle("m", after=1, same=same) == other  # not taken back


def test_reconcile_settles_a_version_whose_gate_died_before_settling(tmp_path: Path) -> None:
    """Once such a version stayed out of the champion's place for good and, through the drift
    floor, blocked every later model."""
    from components.evaluate import seal
    from components.evaluate.registry import CHAMPION, Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry.client
    client.create_registered_model("m")
    same = {"validation_fingerprint": "V", "label_fingerprint": "L"}

    def version(top1: float, sealed: bool = True, **tags: str) -> str:
        tags = {**same, "gate_passed": "True", "top1": str(top1), **tags}
        if sealed:  # as the gate registers them
            tags.update(seal.sealed_tags("m", None, str(tmp_path), {}, tags))
        return str(client.create_model_version("m", source=str(tmp_path), tags=tags).version)

    legacy = version(0.60)  # registered before settling was recorded: left alone
    v2 = version(0.70, settle_after="1", settled="True")
    client.set_registered_model_alias("m", CHAMPION, v2)
    orphan = version(0.90, settle_after="2")  # its process died before settling
    version(0.50, settle_after="2", gate_passed="False")  # refused: nothing to settle
    # Planted by someone who can write to the registry, tagged as a passed, unsettled, better
    # version: never promoted (a sealed one whose tag was changed afterwards, neither).
    version(0.99, sealed=False, settle_after="2")
    forged = version(0.40, settle_after="2", gate_passed="False")
    client.set_model_version_tag("m", forged, "gate_passed", "True")
    # ... nor a version carrying a real version's tags and seal over files of its own.
    copied = dict(client.get_model_version("m", orphan).tags)
    client.create_model_version("m", source=str(tmp_path / "planted"), tags=copied)
    assert registry.reconcile("m") == [orphan]
    assert str(registry.champion("m").version) == orphan
    assert client.get_model_version("m", orphan).tags["settled"] == "True"
    assert registry.reconcile("m") == []  # done once
    assert legacy == "1"


def test_a_model_name_with_a_quote_is_found_not_a_registry_fault(tmp_path: Path) -> None:
    """Once `O'Brien's model` read as "registry fault: Invalid clause(s) in filter string"."""
    from components.evaluate.registry import Registry

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("O'Brien's model", 'the "best" one'):
        registry.client.create_registered_model(name)
        registry.client.create_model_version(name, source=str(tmp_path), tags={"top1": "0.5"})
        assert registry.latest_version(name) == 1
        assert registry.champion(name) is None
    with pytest.raises(ValueError, match="holds both"):
        registry.latest_version("""it's "odd\"""")


def test_registry_calls_are_bounded_against_a_server_that_never_answers(monkeypatch) -> None:
    """MLflow's defaults would wait ~18 minutes on one call (7 retries of 120 s); the registry
    bounds every call of the process unless the environment says otherwise."""
    import socket
    import time

    from components.evaluate import RegistryError
    from components.evaluate.registry import BOUNDED_CALLS, Registry

    for name in BOUNDED_CALLS:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        registry = Registry(f"http://127.0.0.1:{silent.getsockname()[1]}")
        import os

        assert {name: os.environ[name] for name in BOUNDED_CALLS} == BOUNDED_CALLS
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # the bound is read per call
        began = time.monotonic()
        with pytest.raises(RegistryError, match="get_model_version_by_alias"):
            registry.champion("m")
        assert time.monotonic() - began < 20  # three tries of 1 s, 1 s and 2 s apart


def test_two_equally_good_models_on_1000_classes_are_not_told_apart_by_chance() -> None:
    """ImageNet's shape: 1,000 classes of 50 validation images; the challenger is as good as
    the champion and disagrees with it on 10% of the images at random. Judged one by one at
    95%, some class would "fall" by chance in nearly every such comparison; judged together
    (Bonferroni), none does, and the gate passes."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(1000), 50)
    old = rng.random(50_000) < 0.76
    new = old.copy()
    new[rng.choice(np.flatnonzero(old), 2_500, replace=False)] = False  # 2,500 lost
    new[rng.choice(np.flatnonzero(~old), 2_500, replace=False)] = True  # and 2,500 gained
    decision = decide(Outcomes(new, labels), "L", Champion("9", "L", Outcomes(old, labels)), GATE)
    assert decision.passed, decision.reason
    assert not [c for c in decision.classes if c["fell"]]
