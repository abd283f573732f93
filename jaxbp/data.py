"""Datasets that work offline: they ship with a package or are generated.

Example:
    >>> from jaxbp import data
    >>> d = data.digits()
    >>> d["x_train"].shape[1], sorted(set(d["y_train"].tolist()))[:3]
    (64, [0, 1, 2])
"""

from __future__ import annotations

import numpy as np


def train_test_split(x, y, test_fraction: float = 0.2, seed: int = 0):
    """Shuffle with `seed` and split; returns x_train, y_train, x_test, y_test (NumPy)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"train_test_split: test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def digits(test_fraction: float = 0.2, seed: int = 0, image: bool = False, dtype=np.float32):
    """scikit-learn's 8×8 handwritten digits (1797 images, shipped with the package).

    Pixels (0..16) are scaled to [0, 1] and centred with the training mean. Returns a dict with
    x_train, y_train, x_test, y_test; x is (n, 64), or (n, 8, 8, 1) when `image=True`
    (channels-last); y holds integer labels 0..9.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(dtype)
    y = bunch.target.astype(np.int32)
    x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction, seed)
    mean = x_train.mean(axis=0, keepdims=True)
    x_train, x_test = x_train - mean, x_test - mean
    if image:
        x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def mnist1d(seed: int = 42, dtype=np.float32, *, samples: int = 5000):
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated offline.

    Calls the `mnist1d` package's `make_dataset` with its default arguments
    (`get_dataset_args()`: 5000 sequences of length 40, 80/20 split) and the given `seed`; the
    package's download path is never used. The generator seeds NumPy's and Python's global
    random state; both are restored afterwards. Returns a dict with x_train (4000, 40),
    y_train (4000,), x_test (1000, 40), y_test (1000,): x standardized by the package, y integer
    labels 0..9. Takes a few seconds; `samples` (the package's `num_samples`) generates a
    smaller set with the same 80/20 split, for quick runs.
    """
    if samples < 10:
        raise ValueError(f"mnist1d: samples must be at least 10 (one per class), got {samples}")
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": d["x"].astype(dtype),
        "y_train": d["y"].astype(np.int32),
        "x_test": d["x_test"].astype(dtype),
        "y_test": d["y_test"].astype(np.int32),
    }
