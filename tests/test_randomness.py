"""Random draws in the train step: mixup's Beta without Gamma (right distribution, compiles under
XLA), and per-replica augmentation with one λ for the global batch on two logical CPUs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from components.train import randomness

ROOT = Path(__file__).resolve().parent.parent


def test_log_gamma_variates_follow_gamma_for_small_and_large_shapes() -> None:
    for alpha in (0.2, 2.5):
        seed = keras.random.SeedGenerator(7)
        draws = np.exp(np.asarray(randomness.log_gamma_variates((20_000,), alpha, seed)))
        assert stats.kstest(draws, stats.gamma(alpha).cdf).pvalue > 1e-3, alpha


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_beta_log_odds_follow_beta_at_mixups_alpha(compiled: bool) -> None:
    """The log-odds of λ ~ Beta(0.2, 0.2), compared with scipy's distribution through its CDF
    (in log-odds: λ itself rounds to 0 or 1 in float32 for a few percent of the draws)."""
    seed = keras.random.SeedGenerator(3)

    def draws():  # 4,000 log-odds: the pairs (X, Y) of Gamma(0.2) variates, as `beta` draws them
        logs = randomness.log_gamma_variates((2, 4000), 0.2, seed)
        return logs[0] - logs[1]

    run = tf.function(draws, jit_compile=True) if compiled else draws
    log_odds = np.asarray(run(), np.float64)
    cdf = lambda t: stats.beta(0.2, 0.2).cdf(1 / (1 + np.exp(-t)))  # noqa: E731
    assert stats.kstest(log_odds, cdf).pvalue > 1e-3
    assert abs(np.mean(log_odds > 0) - 0.5) < 0.03  # symmetric


@pytest.mark.parametrize("alpha", [0.2, 2.5])
def test_gamma_sampler_matches_a_numpy_reference_fed_the_same_variates(
    monkeypatch, alpha: float
) -> None:
    """Marsaglia and Tsang's method written out in numpy, one draw at a time (the loop the
    sampler turns into twelve proposals at once), fed the very normals and uniforms the sampler
    is: the same Gamma variates to float32 precision, and each rejected proposal is rejected
    (about 2-5% of first proposals at these shapes). A sampler whose acceptance step did
    nothing would still pass a distribution test at some seeds; not this one."""
    rng = np.random.default_rng(0)
    shape = (4000,)
    normals = rng.standard_normal((*shape, randomness.CANDIDATES)).astype(np.float32)
    uniforms = [
        rng.uniform(size=(*shape, randomness.CANDIDATES)).astype(np.float32),
        rng.uniform(1e-30, 1.0, size=shape).astype(np.float32),
    ]
    given = iter(uniforms)
    monkeypatch.setattr(
        keras.random, "normal", lambda *a, **k: keras.ops.convert_to_tensor(normals)
    )
    monkeypatch.setattr(
        keras.random, "uniform", lambda *a, **k: keras.ops.convert_to_tensor(next(given))
    )
    sampled = np.asarray(
        randomness.log_gamma_variates(shape, alpha, keras.random.SeedGenerator(0)), np.float64
    )

    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    expected, first_rejected = np.empty(shape), 0
    for i in range(shape[0]):
        for k in range(randomness.CANDIDATES):
            x, u = float(normals[i, k]), float(uniforms[0][i, k])
            v = (1.0 + c * x) ** 3
            if v > 0 and np.log(u) < 0.5 * x * x + d - d * v + d * np.log(v):
                break
            first_rejected += k == 0
        expected[i] = np.log(d) + np.log(v)
        if alpha < 1.0:
            expected[i] += np.log(float(uniforms[1][i])) / alpha
    np.testing.assert_allclose(sampled, expected, rtol=1e-4, atol=1e-4)
    assert 0.005 < first_rejected / shape[0] < 0.06


def test_one_beta_draw_is_a_scalar_in_the_unit_interval_under_xla() -> None:
    seed = keras.random.SeedGenerator(0)
    lam = tf.function(lambda: randomness.beta(0.2, seed), jit_compile=True)
    values = [float(lam()) for _ in range(50)]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 40


def test_gamma_variates_need_a_seed_generator() -> None:
    with pytest.raises(ValueError, match="SeedGenerator"):
        randomness.log_gamma_variates((2,), 0.2, 7)  # one int seed would reuse the same bits


def test_replica_seeds_differ_by_replica_and_share_one_state() -> None:
    replica = {"id": 0}
    generator = randomness.ReplicaSeedGenerator(5, lambda: replica["id"])
    first = np.asarray(generator.next())
    replica["id"] = 1
    second = np.asarray(generator.next())
    assert first.tolist() == [5, 0]
    assert second.tolist() == [5 + randomness.REPLICA_STRIDE, 1]  # the state moved on once each
    assert generator.state.path.split("/")[0].startswith("seed_generator")  # checkpoint paths


REPLICAS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from components.train.config import AugmentConfig, TrainConfig
    from components.train.devices import _tf_replica_id
    from components.train.trainer import TrainingModel
    from tests.conftest import small_classifier

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        config = TrainConfig(model="darknet53-tiny", image_size=32, mixup_alpha=0.2,
                             augment=AugmentConfig(hue=0.1))
        backbone = small_classifier("small", 4)
        model = TrainingModel(backbone, config, 4, None, _tf_replica_id)
        model.mixup_on.assign(1.0)

    @tf.function
    def step(images):
        return model.augment(images, training=True), model(images, training=True)["mix"]

    images = tf.constant(np.full((4, 32, 32, 3), 120, np.uint8))  # the same slice on both
    result = {"equal": [], "lams": []}
    for _ in range(3):
        augmented, lam = strategy.run(step, args=(images,))
        a, b = (t.numpy() for t in strategy.experimental_local_results(augmented))
        result["equal"].append(bool(np.array_equal(a, b)))
        result["lams"].append([float(t) for t in strategy.experimental_local_results(lam)])
    states = strategy.experimental_local_results(model.augment.seed_generator.state.value)
    result["states"] = [s.numpy().tolist() for s in states]
    print(json.dumps(result))
    """
)


@pytest.mark.integration
def test_two_replicas_draw_their_own_augmentation_and_share_lambda() -> None:
    """Two logical CPUs under MirroredStrategy, the same images on each: the augmented outputs
    differ (each replica folds its index into the seed), mixup's λ is one per global batch, and
    the generator state every replica holds stays one state (what a checkpoint saves)."""
    done = subprocess.run(
        [sys.executable, "-c", REPLICAS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"] == [False, False, False]
    assert all(a == b for a, b in result["lams"]) and len({a for a, _ in result["lams"]}) == 3
    assert result["states"][0] == result["states"][1]
