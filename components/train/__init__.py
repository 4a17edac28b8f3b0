"""Training (SPEC §6): Darknet53 with the Bag-of-Tricks recipe on the ingested TFRecords.

python -m components.train --data DATA_DIR --output OUT_DIR [--config config.json]
"""

from components.train.config import AugmentConfig, TrainConfig
from components.train.loop import run_training

__all__ = ["AugmentConfig", "TrainConfig", "run_training"]
