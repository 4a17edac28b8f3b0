"""Dynamic loss scaling for float16 whose skipped steps still move the schedule on.

Keras' `LossScaleOptimizer` skips an update whose gradients overflowed (and halves the loss
scale). It skips the inner optimizer's step counter with it, and that counter is what the
learning-rate schedule reads: each skipped step held warmup and decay back by one, so a float16
run drifted behind the schedule every other run (and `log_every`, checkpoints and epochs, which
count batches) by as many steps as it skipped. Here a skipped step still counts as a step of the
schedule, and the skips are counted on their own (`skipped_steps`), which is how the loop tells a
run whose every update is skipped.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("trickflow")
class ScheduledLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """LossScaleOptimizer where `iterations` counts every step, applied or skipped.

    Named as Keras' own, so that its variables keep their checkpoint paths; `skipped_steps` is
    one more variable, so a float16 checkpoint written before it existed does not restore.
    """

    def __init__(self, inner_optimizer, name: str = "loss_scale_optimizer", **kwargs):
        super().__init__(inner_optimizer, name=name, **kwargs)

    def build(self, var_list) -> None:
        super().build(var_list)
        self.skipped_steps = self.add_variable(
            shape=(),
            dtype="int",
            initializer="zeros",
            aggregation="only_first_replica",
            name="skipped_steps",
        )

    def _stateful_handle_non_finite_grads(self) -> None:
        super()._stateful_handle_non_finite_grads()
        self.skipped_steps.assign_add(1)
        self.inner_optimizer.iterations.assign_add(1)

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        """The same on JAX, where the trainer passes the state in and takes it back."""
        mapping = list(zip(self.variables, optimizer_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.step_counter.assign(0)
            self.dynamic_scale.assign(ops.multiply(self.dynamic_scale, 0.5))
            self.skipped_steps.assign_add(1)
            self.inner_optimizer.iterations.assign_add(1)
        return trainable_variables, [scope.get_current_value(v) for v in self.variables]
