"""A ``fit`` loop for ``tf.distribute`` strategies that Keras 3's ``Model.fit`` cannot drive.

Keras 3.15's ``fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy`` (its symbolic
build and metric reduction expect in-process replicas; keras-team/keras#20585).  This loop uses
only public APIs (``strategy.run``, ``GradientTape``, the compiled model's optimizer, Keras
callbacks with their progress bar and ``History``), so ``ssm train --strategy multiworker``
trains the same masked models with the same callbacks.

The loss is sparse categorical cross-entropy averaged over the *global* batch, so every worker's
gradients sum to the gradient of one large batch: a run on N workers with global batch B follows
a one-worker run with batch B up to float rounding.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["evaluate_distributed", "fit_distributed"]


def _step_fns(model: keras.Model, strategy: Any) -> tuple[Any, Any]:
    import tensorflow as tf

    def replica_train(x: Any, y: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
            loss = tf.nn.compute_average_loss(per_example)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return _sums(per_example, y, probs)

    def replica_test(x: Any, y: Any) -> tuple[Any, Any, Any]:
        probs = model(x, training=False)
        return _sums(keras.losses.sparse_categorical_crossentropy(y, probs), y, probs)

    def _sums(per_example: Any, y: Any, probs: Any) -> tuple[Any, Any, Any]:
        labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1), labels), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), count

    def reduced(fn: Any) -> Any:
        @tf.function
        def step(batch: Any) -> Any:
            values = strategy.run(fn, args=batch)
            return [strategy.reduce("SUM", v, axis=None) for v in values]

        return step

    return reduced(replica_train), reduced(replica_test)


def evaluate_distributed(model: keras.Model, strategy: Any, dataset: Any) -> dict[str, float]:
    """``{"loss", "accuracy"}`` of ``model`` on ``dataset`` (a finite ``tf.data`` dataset)."""
    _, test_step = _step_fns(model, strategy)
    totals = [0.0, 0.0, 0.0]
    for batch in strategy.experimental_distribute_dataset(dataset):
        totals = [t + float(v) for t, v in zip(totals, test_step(batch), strict=True)]
    return {"loss": totals[0] / max(totals[2], 1.0), "accuracy": totals[1] / max(totals[2], 1.0)}


def fit_distributed(
    model: keras.Model,
    strategy: Any,
    train: Any,
    *,
    steps_per_epoch: int,
    epochs: int,
    validation_data: Any = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 1,
) -> keras.callbacks.History:
    """Train ``model`` (compiled inside ``strategy.scope()``) like ``model.fit`` would.

    ``train`` yields ``(images, integer labels)`` global batches (an endless stream, e.g.
    :func:`keras_ssm.data.load_epochs`); ``steps_per_epoch`` batches make an epoch.  Logs
    ``loss`` and ``accuracy`` (and ``val_loss``/``val_accuracy``) to the callbacks, which see
    the usual ``on_train_begin`` ... ``on_train_end`` sequence.
    """
    train_step, _ = _step_fns(model, strategy)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*(callbacks or []), history],
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    iterator = iter(strategy.experimental_distribute_dataset(train))
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        totals = [0.0, 0.0, 0.0]
        logs: dict[str, float] = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            values = train_step(next(iterator))
            totals = [t + float(v) for t, v in zip(totals, values, strict=True)]
            logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
            callback_list.on_train_batch_end(step, logs)
        if validation_data is not None:
            val = evaluate_distributed(model, strategy, validation_data)
            logs = {**logs, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history
