"""Learning-rate schedules the recipes use, registered with Keras so that a ``.keras`` file
whose optimizer uses one loads after ``import keras_ssm``.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["LinearWarmup"]


@keras.saving.register_keras_serializable(package="keras_ssm")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule``'s learning rate times ``min(1, (step + 1) / warmup_steps)``.

    The first step runs at ``1 / warmup_steps`` of the rate, step ``warmup_steps - 1`` and
    later at the full rate; ``schedule`` keeps counting from step 0, so the warm-up does not
    shift its decay.

    Args:
        schedule: a ``LearningRateSchedule`` or a float (a constant rate).
        warmup_steps: optimizer steps of the ramp (>= 1).

    >>> import keras
    >>> from keras_ssm.schedules import LinearWarmup
    >>> warm = LinearWarmup(0.1, warmup_steps=4)
    >>> [round(float(warm(step)), 3) for step in range(6)]
    [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    >>> config = keras.optimizers.schedules.serialize(warm)
    >>> round(float(keras.optimizers.schedules.deserialize(config)(1)), 3)
    0.05
    """

    def __init__(
        self,
        schedule: float | keras.optimizers.schedules.LearningRateSchedule,
        warmup_steps: int,
    ) -> None:
        super().__init__()
        if isinstance(schedule, dict):  # from get_config
            schedule = keras.optimizers.schedules.deserialize(schedule)
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            if isinstance(schedule, bool) or not isinstance(schedule, (int, float)):
                raise ValueError(
                    f"`schedule` must be a float or a keras LearningRateSchedule; got {schedule!r}."
                )
            if not schedule > 0:
                raise ValueError(f"A constant `schedule` must be positive; got {schedule!r}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"`warmup_steps` must be an int >= 1; got {warmup_steps!r}.")
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            rate = ops.cast(self.schedule(step), "float32")
        else:
            rate = ops.convert_to_tensor(float(self.schedule), "float32")
        return rate * ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}
