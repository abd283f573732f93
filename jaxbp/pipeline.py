"""Data for training: pytrees of arrays cut into shuffled minibatches, and evaluation batches.

Two forms of data are taken (by `fit` and by anything built on these functions):

- **Rows**: `(x, y)` where x and y are any pytrees of arrays whose leaves all share the
  leading (row) axis — an array, a tuple of arrays for several inputs, `(x, None)` targets of
  a VAE (None is an empty subtree), a tuple of targets for multi-task heads, a dict. A batch
  is the same rows of every leaf.
- **Pre-made batches**: a list of `(x, y)` batches, used whole. This is the form for data that
  cannot be cut by rows: a graph batch (`jaxbp.layers.graph.batch_graphs`) holds node rows,
  edge rows and graph rows of different counts, and edge indices that point into the node
  rows. Each epoch visits the list in a fresh order.

The order of either form depends only on the data key and the step, so a resumed run sees the
same batches as an uninterrupted one: epoch e uses the permutation of `fold_in(key, e)`, and
with rows each epoch has n // batch_size steps (the last incomplete batch is dropped).

Example:
    >>> import jax, numpy as np
    >>> from jaxbp import pipeline
    >>> x, y = np.arange(12.0).reshape(6, 2), (np.arange(6), None)      # a pytree target
    >>> pipeline.row_count("fit", (x, y))
    6
    >>> rows = pipeline.RowBatches(jax.random.key(0), 6, batch_size=2)
    >>> xb, yb = pipeline.take((x, y), rows.rows(0))
    >>> xb.shape, yb[0].shape, yb[1]
    ((2, 2), (2,), None)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ACCEPTED = (
    "train_data = (x, y) with x and y pytrees of arrays sharing their leading (row) axis "
    "(arrays, tuples, dicts; None for an absent target), or a list of pre-made (x, y) batches "
    "(e.g. graph batches from jaxbp.layers.graph.batch_graphs)"
)


def is_batch_list(data) -> bool:
    """True for the pre-made form: a list of (x, y) batches."""
    return isinstance(data, list)


def as_host(tree, float_dtype=None):
    """Every leaf as a NumPy array, floating-point leaves cast to `float_dtype` (integer ids,
    labels and edge lists unchanged)."""

    def host(a):
        a = np.asarray(a)
        if float_dtype is not None and jnp.issubdtype(a.dtype, jnp.floating):
            return a.astype(float_dtype)
        return a

    return jax.tree.map(host, tree)


def row_count(where: str, tree) -> int:
    """The shared leading size of every leaf of `tree`; ValueError naming the leaves when they
    differ (data that cannot be cut by rows) or when a leaf is a scalar."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not paths:
        raise ValueError(f"{where}: the data holds no arrays; expected {ACCEPTED}")
    sizes = {}
    for path, leaf in paths:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"{where}: leaf {jax.tree_util.keystr(path)} is a scalar; {ACCEPTED}")
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k or 'x'}: {v}" for k, v in sizes.items())
        raise ValueError(
            f"{where}: the leaves do not share one row count ({listed}), so they cannot be cut "
            f"into row batches; expected {ACCEPTED}"
        )
    return next(iter(sizes.values()))


def example_shape(x):
    """The per-example shape of every leaf of a batch `x` (its shape without the row axis),
    in x's structure: what `Layer.init` takes as `in_shape`."""
    return jax.tree.map(lambda a: tuple(np.shape(a)[1:]), x)


def take(tree, rows):
    """The rows `rows` of every leaf (NumPy or jax arrays; on the device under jit)."""
    return jax.tree.map(lambda a: a[rows], tree)


def split_pair(where: str, data):
    """(x, y) from a 2-sequence; TypeError saying what is accepted otherwise."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{where}: expected a pair (x, y), got {type(data).__name__}; {ACCEPTED}")
    return data[0], data[1]


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def epoch_rows(data_key, epochs, n, per_epoch, batch_size):
    """Minibatch rows (len(epochs)·per_epoch, batch_size) of the given epochs, computed on the
    device: epoch e uses permutation(fold_in(data_key, e), n), cut into per_epoch batches."""

    def rows(epoch):
        perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
        return perm[: per_epoch * batch_size].reshape(per_epoch, batch_size).astype(jnp.int32)

    return jnp.concatenate([rows(epochs[j]) for j in range(epochs.shape[0])])


class RowBatches:
    """The minibatch rows of every step, as windows of a device array.

    Each epoch has n // batch_size steps. To keep the host out of the per-step path, the rows
    of epochs e and e+1 are computed on the device as one (2·steps_per_epoch, batch) array; a
    call of K steps takes K consecutive rows of it from a start index (`window`).
    """

    def __init__(self, data_key, n: int, batch_size: int):
        if batch_size > n:
            raise ValueError(f"fit: batch_size={batch_size} is larger than the {n} training rows")
        self.key, self.n, self.batch_size = data_key, n, batch_size
        self.per_epoch = n // batch_size
        self.epoch, self.stream = None, None

    def _rows(self, epochs):
        epochs = np.asarray(epochs, np.uint32)
        return epoch_rows(self.key, epochs, self.n, self.per_epoch, self.batch_size)

    def window(self, step: int, count: int):
        """(stream, start): the rows of steps step .. step+count−1 are stream[start:start+count]."""
        epoch, i = divmod(step, self.per_epoch)
        if i + count > 2 * self.per_epoch:  # more steps per call than an epoch holds
            last = epoch + (i + count - 1) // self.per_epoch
            rows = self._rows(list(range(epoch, last + 1)))
            return rows[i : i + count], 0
        if self.epoch != epoch:
            self.stream = self._rows([epoch, epoch + 1])
            self.epoch = epoch
        return self.stream, i

    def rows(self, step: int):
        """The (batch_size,) row indices of step `step`."""
        stream, start = self.window(step, 1)
        return stream[start]


class ListBatches:
    """Pre-made batches in a fresh order each epoch: step s draws batch perm_e[s mod m] of
    epoch e = s // m (m batches), perm_e the permutation of `fold_in(data_key, e)`."""

    def __init__(self, data_key, batches: list):
        if not batches:
            raise ValueError(f"fit: the list of batches is empty; expected {ACCEPTED}")
        self.key, self.batches = data_key, [split_pair("fit: batch", b) for b in batches]
        self.epoch, self.order = None, None

    def __call__(self, step: int, count: int = 1):
        if count != 1:
            raise ValueError("fit: pre-made batches run one step per call (steps_per_call=1)")
        epoch, i = divmod(step, len(self.batches))
        if self.epoch != epoch:
            key = jax.random.fold_in(self.key, epoch)
            self.order = np.asarray(jax.random.permutation(key, len(self.batches)))
            self.epoch = epoch
        return self.batches[int(self.order[i])]


def eval_batches(data, batch_size: int):
    """(x, y, rows) chunks of evaluation data: rows form cut into `batch_size` rows (the last
    chunk smaller), a list of pre-made batches as it is (rows: the batch's target rows, or its
    input rows when the target holds no array)."""
    if is_batch_list(data):
        for batch in data:
            x, y = split_pair("fit: eval batch", batch)
            yield x, y, row_count("fit: eval batch", y if jax.tree.leaves(y) else x)
        return
    x, y = split_pair("fit: eval_data", data)
    n = row_count("fit: eval_data", (x, y))
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        yield take(x, rows), take(y, rows), rows.stop - rows.start
