"""Training: :func:`train` (the library entry behind ``ssm train``), the run folder
(:class:`RunDir`), the numeric path (precision, compilation) and the run's callbacks."""

from keras_ssm.run_dir import RunDir, RunFolderError, load_model_file, open_run
from keras_ssm.training.callbacks import HistoryLog
from keras_ssm.training.precision import (
    PRECISIONS,
    cpu_description,
    cpu_has_amx,
    cpu_has_bf16,
    policy_name,
    policy_scope,
    resolve_jit,
    resolve_precision,
)
from keras_ssm.training.trainer import STRATEGIES, TrainResult, make_strategy, train

__all__ = [
    "PRECISIONS",
    "STRATEGIES",
    "HistoryLog",
    "RunDir",
    "RunFolderError",
    "TrainResult",
    "cpu_description",
    "cpu_has_amx",
    "cpu_has_bf16",
    "load_model_file",
    "make_strategy",
    "open_run",
    "policy_name",
    "policy_scope",
    "resolve_jit",
    "resolve_precision",
    "train",
]
