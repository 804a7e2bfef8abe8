"""Training: the numeric path (precision, compilation) and, soon, ``train()`` and run folders."""

from keras_ssm.training.precision import (
    PRECISIONS,
    cpu_has_bf16,
    policy_name,
    policy_scope,
    resolve_jit,
    resolve_precision,
)

__all__ = [
    "PRECISIONS",
    "cpu_has_bf16",
    "policy_name",
    "policy_scope",
    "resolve_jit",
    "resolve_precision",
]
