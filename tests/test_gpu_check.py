"""The GPU check's code path, run on CPU JAX in its own environment without TensorFlow.

`make gpu-check-cpu` builds that environment (.venv-gpu, from bench/gpu_env/requirements.txt)
and runs `bench/gpu_check.py --quick`: the product's training function, its augmentation,
mixup, schedule and checkpoints on another Keras backend, as on the GPU machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_the_training_code_runs_on_jax_without_tensorflow() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "gpu-check-cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert '"backend": "jax"' in result.stdout
    # 2 models x (3 precisions, and bfloat16 again at 2 steps per call, whose progress
    # callback runs on Keras' threads on JAX)
    assert result.stdout.count('"images_per_second"') == 8
    assert result.stdout.count('"steps_per_execution": 2') == 2
    assert '"digits_top1"' in result.stdout and "gpu check: passed" in result.stdout
    # TensorFlow is not even installed there: the check ran without it.
    probe = subprocess.run(
        [str(ROOT / ".venv-gpu/bin/python"), "-c", "import tensorflow"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
