"""Registry cases for `jaxbp.distributed`: the collectives, the tensor-parallel Dense pair and
the data-parallel wrappers.

The registry runs in one process with one device, so each case runs its layer inside
`jax.shard_map` over a 1 × 1 (data × model) mesh: the real collectives (psum, all-gather,
reduce-scatter) execute, on an axis of one device. The multi-device equalities (1/2/4/8
devices, 2-D meshes, two processes) are in tests/test_distributed.py.
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import PartitionSpec as P

from jaxbp import distributed, losses
from jaxbp.cases.base import layer_case, model_case, size
from jaxbp.layer import Layer
from jaxbp.losses import Loss


def _one_device_mesh():
    return distributed.make_mesh(1, 1, devices=jax.devices()[:1])


@functools.lru_cache(maxsize=256)
def _shard_mapped(fn):
    """jit(shard_map(fn)) on a 1 × 1 mesh, made once per function (a mesh program is compiled
    even in the registry's no-jit mode, and finite differences call it many times)."""
    mapped = jax.shard_map(
        fn, mesh=_one_device_mesh(), in_specs=P(), out_specs=P(), check_vma=False
    )
    return jax.jit(mapped)


def on_one_device_mesh(layer: Layer) -> Layer:
    """`layer` with its forward and its backward each run inside shard_map on a 1 × 1 mesh."""

    def forward_fn(train):
        def fwd(p, s, xin, k):
            return layer.forward(p, s, xin, key=k, train=train)

        return _shard_mapped(fwd)

    forwards = {False: forward_fn(False), True: forward_fn(True)}

    def forward(params, state, x, *, key=None, train=False):
        return forwards[bool(train)](params, state, x, key)

    def backward(params, residuals, dy):
        return _shard_mapped(layer.backward)(params, residuals, dy)

    return Layer(layer.init, forward, backward, f"on_mesh({layer.name})")


def loss_on_one_device_mesh(loss: Loss) -> Loss:
    backward_mapped = _shard_mapped(loss.backward)

    def forward(pred, target):
        return _shard_mapped(loss.forward)(pred, target)

    def backward(residuals, g=1.0):
        return backward_mapped(residuals, g)

    return Loss(forward, backward, f"on_mesh({loss.name})")


def _features(rng):
    return tuple(size(rng, 1, 3) for _ in range(int(rng.integers(0, 2)))) + (size(rng, 1, 6),)


def _collective(make):
    def build(rng):
        return on_one_device_mesh(make()), _features(rng)

    return build


def _column(rng):
    return on_one_device_mesh(distributed.ColumnParallelDense(size(rng, 1, 7))), _features(rng)


def _row(rng):
    return on_one_device_mesh(distributed.RowParallelDense(size(rng, 1, 7))), _features(rng)


def _tp_mlp(rng):
    block = distributed.TensorParallelMLP(size(rng, 1, 8), size(rng, 1, 5))
    return on_one_device_mesh(block), _features(rng)


def _data_parallel_model(rng, batch):
    d, k = size(rng, 1, 5), size(rng, 2, 4)
    model = distributed.data_parallel(distributed.TensorParallelMLP(size(rng, 1, 6), k))
    loss = distributed.data_mean(losses.softmax_cross_entropy())
    x = rng.normal(size=(batch, d))
    y = rng.integers(0, k, size=batch)
    return on_one_device_mesh(model), loss_on_one_device_mesh(loss), x, y


CASES = [
    layer_case("Replicate", _collective(distributed.Replicate)),
    layer_case("AllReduce", _collective(distributed.AllReduce)),
    layer_case("AllGather", _collective(distributed.AllGather)),
    layer_case("ColumnParallelDense", _column),
    layer_case("RowParallelDense", _row),
    layer_case("TensorParallelMLP", _tp_mlp),
    model_case("data_parallel(TensorParallelMLP)", _data_parallel_model),
]
