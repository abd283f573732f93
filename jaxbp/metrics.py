"""Evaluation: metrics, the compiled evaluation step, averages over a data set, and the
one-time check of a data set's integer inputs and labels.

Example:
    >>> import jax, numpy as np, jaxbp
    >>> from jaxbp import losses, metrics
    >>> model, loss = jaxbp.MLP([4, 3]), losses.softmax_cross_entropy()
    >>> _, params, state = model.init(jax.random.key(0), (2,))
    >>> x, y = np.ones((5, 2), np.float32), np.array([0, 1, 2, 3, 0])     # label 3 of 3 classes
    >>> try:
    ...     metrics.check_data("fit: train_data", model, loss, params, state, (x, y))
    ... except ValueError as e:
    ...     print(e)  # doctest: +NORMALIZE_WHITESPACE
    fit: train_data rows 0..4: softmax_cross_entropy: label 3 at index (3,)
    is outside the valid range [0, 3)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import indices, pipeline, precision
from jaxbp.indices import check_range
from jaxbp.layer import Layer
from jaxbp.losses import Loss


def accuracy(pred, target):
    """Fraction of rows whose argmax matches the label (integer labels or one-hot rows).

    Integer labels must lie in [0, classes) (see `jaxbp.indices`)."""
    if jnp.issubdtype(target.dtype, jnp.integer):
        check_range("accuracy", "label", target, 0, jnp.shape(pred)[-1])
        labels = target
    else:
        labels = jnp.argmax(target, -1)
    return jnp.mean(jnp.argmax(pred, axis=-1) == labels)


def make_eval_step(
    model: Layer, loss: Loss, metric=accuracy, metric_name="accuracy", *, compute_dtype=None
):
    """Jit-compiled `(params, model_state, x, y) -> {"loss": L, metric_name: m}` (train=False);
    with `compute_dtype` the params, state and inputs are cast to it first."""

    def evaluate(params, model_state, x, y):
        if compute_dtype is not None:
            params, model_state, x = precision.cast_floats((params, model_state, x), compute_dtype)
        pred, _, _ = model.forward(params, model_state, x, train=False)
        value, _ = loss.forward(pred, y)
        out = {"loss": value}
        if metric is not None:
            out[metric_name] = metric(pred, y)
        return out

    return jax.jit(evaluate)


def evaluate(eval_step, params, model_state, data, batch_size: int = 1024) -> dict:
    """The metrics of `eval_step` averaged over `data` (rows `(x, y)` in chunks of
    `batch_size`, or a list of pre-made batches), each chunk weighted by its rows."""
    totals, n = {}, 0
    for x, y, rows in pipeline.eval_batches(data, batch_size):
        out = eval_step(params, model_state, x, y)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * rows
        n += rows
    return {k: v / n for k, v in totals.items()}


def has_integers(data) -> bool:
    """Whether any leaf of `data` holds integers (ids, labels, edge lists)."""
    return any(np.issubdtype(np.asarray(a).dtype, np.integer) for a in jax.tree.leaves(data))


def check_data(where: str, model: Layer, loss: Loss, params, state, data, batch_size=1024):
    """Run the layers' and the loss's own boundary checks once on every row of `data`.

    Rows `(x, y)`: the forward and the loss compiled under `indices.checked`, chunk by chunk;
    a chunk that fails is run again outside jit, so that the ValueError carries the layer's
    own message (its index counted within the chunk, whose rows it names). Pre-made batches
    (each of its own shape, so each would compile anew): every batch outside jit."""
    if pipeline.is_batch_list(data):
        for i, batch in enumerate(data):
            _check_eagerly(f"{where} batch {i}", model, loss, params, state, *batch)
        return
    try:
        forward = _checked_forward(model, loss)
    except TypeError:  # an unhashable model or loss: compile without the cache
        forward = _checked_forward.__wrapped__(model, loss)
    start = 0
    for x, y, rows in pipeline.eval_batches(data, batch_size):
        err, _ = forward(params, state, x, y)
        if err.get() is not None:
            named = f"{where} rows {start}..{start + rows - 1}"
            _check_eagerly(named, model, loss, params, state, x, y)
            raise ValueError(f"{named}: {err.get()}")
        start += rows


def _check_eagerly(where, model, loss, params, state, x, y):
    try:
        loss.forward(model.forward(params, state, x, train=False)[0], y)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@functools.lru_cache(maxsize=8)
def _checked_forward(model, loss):
    def forward(params, state, x, y):
        return loss.forward(model.forward(params, state, x, train=False)[0], y)[0]

    return jax.jit(indices.checked(forward))
