"""Data and tensor parallelism on JAX's own distributed runtime, the backward of every
collective written out.

JAX is the distributed engine (device meshes, shardings, `jax.shard_map`, `jax.distributed`
for many hosts, gloo on CPU and NCCL on GPU). What this module adds is the backward of the
communication, written like every other backward in jaxbp. The rule is one line of linear
algebra: the backward of a linear map is its transpose, and

    replicate   x ↦ (x, x, ..., x)          has transpose   (d_1, ..., d_n) ↦ Σ_i d_i   (psum)
    psum        (x_1, ..., x_n) ↦ Σ_i x_i    has transpose   d ↦ (d, ..., d)             (identity)
    all-gather  (x_1, ..., x_n) ↦ [x_1 ... x_n] on every device
                                            has transpose   reduce-scatter: dx_i = Σ_j dy_j[i]

Which transpose a device runs depends on what its cotangent holds. A value that the rest of
the computation uses *replicated* (the same ops on every device, e.g. the loss) carries its
full cotangent on every device; a value that each device uses *differently* (with its own
weight shard) carries only that device's part, and the parts must be summed. Hence the two
conjugate operators of Megatron-LM (Shoeybi et al. 2019): `Replicate` (f: identity forward,
all-reduce backward — a replicated input feeding device-specific shards) and `AllReduce`
(g: all-reduce forward, identity backward — partial sums becoming a replicated output). The
all-gather has both forms: `AllGather` (backward reduce-scatter, consumer device-specific) and
`GatherOutput` (backward: keep the own block, consumer replicated); `ReduceScatter` is the
transpose of `AllGather`.

- **Data parallelism** is `Replicate` applied to the parameters: every device holds θ, runs
  forward and backward on its own rows, and the backward of the replication sums the
  per-device gradients. The loss is the mean over devices of the per-device means (an
  all-reduce forward whose backward hands each device g/n, no communication).
  `jaxbp.make_train_step(model, loss, optimizer, mesh=mesh)` is that step inside
  `jax.shard_map` (`shard_map_step`); `jaxbp.fit(..., mesh=mesh)` trains with it.
- **Tensor parallelism**: `ColumnParallelDense` splits W's columns over the `model` axis (its
  input goes through `Replicate`), `RowParallelDense` splits W's rows and sums the partial
  products with `AllReduce`. `TensorParallelMLP` is the pair, so an MLP block costs one
  all-reduce forward and one backward.

Outside `shard_map` (no axis of the name is bound) every collective here acts on an axis of
one device, i.e. is the identity: a tensor-parallel model evaluated without a mesh is exactly
its unsplit version, with the same parameters.

Example (runs on one device; with `--xla_force_host_platform_device_count=8` or 8 GPUs the
same code splits 8 ways):
    >>> import jax, numpy as np, jaxbp
    >>> from jaxbp import distributed, losses, optim
    >>> mesh = distributed.make_mesh()                      # all devices on the "data" axis
    >>> model, opt = jaxbp.MLP([8, 2]), optim.adam(1e-2)
    >>> state = jaxbp.init_train_state(model, opt, jax.random.key(0), (4,))
    >>> step = jaxbp.make_train_step(model, losses.softmax_cross_entropy(), opt, mesh=mesh)
    >>> x = np.ones((16, 4), np.float32); y = np.zeros(16, np.int32)
    >>> state, loss = step(state, x, y)
    >>> int(state.step), bool(loss > 0)
    (1, True)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbp.activations import Gelu
from jaxbp.layer import Child, Layer, as_shape, check_float_input, positive_int, serial
from jaxbp.layers import dense
from jaxbp.losses import Loss

DATA, MODEL = "data", "model"


# ----------------------------------------------------------------------------- meshes


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
    """A (data × model) device mesh with axes named "data" and "model".

    `data` defaults to all the devices left over by `model`. In a multi-host run
    (`jax.distributed.initialize`), `jax.devices()` lists every host's devices, so the mesh
    spans them all.
    """
    devices = list(jax.devices() if devices is None else devices)
    model = positive_int("make_mesh", "model", model)
    if data is None:
        data = len(devices) // model
    data = positive_int("make_mesh", "data", data)
    if data * model > len(devices):
        raise ValueError(
            f"make_mesh: a {data} × {model} mesh needs {data * model} devices, "
            f"only {len(devices)} are available"
        )
    grid = np.array(devices[: data * model], dtype=object).reshape(data, model)
    return Mesh(grid, (DATA, MODEL))


def axis_bound(axis_name) -> bool:
    """Whether `axis_name` is a mesh axis of the enclosing `shard_map` (False outside one)."""
    try:
        jax.lax.axis_size(axis_name)
    except NameError:
        return False
    return True


# --------------------------------------------- the collectives and their backward (ops)


def replicate_forward(x, axis_name):
    """f: y_i = x on every device i of the axis (x is already there: no communication)."""
    return x


def replicate_backward(dy, axis_name):
    """fᵀ: dx = Σ_i dy_i, an all-reduce (psum) of the devices' cotangents, leaf by leaf."""
    if not axis_bound(axis_name):
        return dy
    return jax.tree.map(lambda d: jax.lax.psum(d, axis_name), dy)


def all_reduce_forward(x, axis_name):
    """g: y = Σ_i x_i on every device (psum)."""
    if not axis_bound(axis_name):
        return x
    return jax.lax.psum(x, axis_name)


def all_reduce_backward(dy, axis_name):
    """gᵀ: dx_i = dy. The output is replicated and each device holds its full cotangent, so
    the transpose of the sum hands that cotangent to every summand: no communication."""
    return dy


def all_gather_forward(x, axis_name, axis):
    """y = [x_1 x_2 ... x_n], the devices' blocks concatenated along `axis`, on every device."""
    if not axis_bound(axis_name):
        return x
    return jax.lax.all_gather(x, axis_name, axis=axis, tiled=True)


def all_gather_backward(dy, axis_name, axis):
    """Reduce-scatter, for copies used differently on each device: device j's cotangent dy_j
    is partial, and block i of x went into every copy, so dx_i = Σ_j dy_j[block i]."""
    if not axis_bound(axis_name):
        return dy
    return jax.lax.psum_scatter(dy, axis_name, scatter_dimension=axis, tiled=True)


def gather_output_backward(dy, axis_name, axis):
    """The all-gather's transpose when what follows runs replicated: every device holds the
    full cotangent of the gathered value, so device i keeps its block, dx_i = dy[block i]."""
    if not axis_bound(axis_name):
        return dy
    size = dy.shape[axis] // jax.lax.axis_size(axis_name)
    start = jax.lax.axis_index(axis_name) * size
    return jax.lax.dynamic_slice_in_dim(dy, start, size, axis)


def reduce_scatter_forward(x, axis_name, axis):
    """y_i = (Σ_j x_j)[block i]: the sum of the devices' values, device i keeping block i."""
    if not axis_bound(axis_name):
        return x
    return jax.lax.psum_scatter(x, axis_name, scatter_dimension=axis, tiled=True)


def reduce_scatter_backward(dy, axis_name, axis):
    """All-gather: x_j entered every block of the sum, so dx_j = [dy_1 ... dy_n]."""
    return all_gather_forward(dy, axis_name, axis)


# -------------------------------------------------------- the collectives as layers


def _collective_layer(name, forward_op, backward_op) -> Layer:
    def init(key, in_shape):
        return as_shape(in_shape), (), ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        return forward_op(x), (), state

    def backward(params, residuals, dy):
        return (), backward_op(dy)

    return Layer(init, forward, backward, name)


def Replicate(*, axis_name: str = MODEL) -> Layer:
    """Megatron's f, in front of a column-parallel layer: forward y = x (the identity on a
    replicated input), backward dx = Σ_devices dy (all-reduce), because every device's shard
    of the next layer used the same x."""
    return _collective_layer(
        f"Replicate({axis_name!r})",
        lambda x: replicate_forward(x, axis_name),
        lambda dy: replicate_backward(dy, axis_name),
    )


def AllReduce(*, axis_name: str = MODEL) -> Layer:
    """Megatron's g, after a row-parallel layer: forward y = Σ_devices x (all-reduce),
    backward dx = dy (identity), the conjugate of `Replicate`."""
    return _collective_layer(
        f"AllReduce({axis_name!r})",
        lambda x: all_reduce_forward(x, axis_name),
        lambda dy: all_reduce_backward(dy, axis_name),
    )


def _check_axis(name, axis):
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise ValueError(f"{name}: axis must be a nonzero int (0 is the batch), got {axis!r}")


def AllGather(*, axis_name: str = MODEL, axis: int = -1) -> Layer:
    """Gather the devices' blocks along the feature `axis` (negative counts from the end),
    for a consumer that uses its copy differently on each device (its own weight shard, as
    in sequence parallelism): forward all-gather, backward reduce-scatter."""
    _check_axis("AllGather", axis)
    return _collective_layer(
        f"AllGather({axis_name!r}, axis={axis})",
        lambda x: all_gather_forward(x, axis_name, axis % x.ndim),
        lambda dy: all_gather_backward(dy, axis_name, axis % dy.ndim),
    )


def GatherOutput(*, axis_name: str = MODEL, axis: int = -1) -> Layer:
    """Gather the devices' blocks along `axis` for a replicated consumer (Megatron's
    gather_output, e.g. after a `ColumnParallelDense`): forward all-gather, backward keeps
    each device's own block of the (replicated) cotangent — no communication."""
    _check_axis("GatherOutput", axis)
    return _collective_layer(
        f"GatherOutput({axis_name!r}, axis={axis})",
        lambda x: all_gather_forward(x, axis_name, axis % x.ndim),
        lambda dy: gather_output_backward(dy, axis_name, axis % dy.ndim),
    )


def ReduceScatter(*, axis_name: str = MODEL, axis: int = -1) -> Layer:
    """Sum the devices' values and keep block i on device i: forward reduce-scatter,
    backward all-gather (the transpose of `AllGather`)."""
    _check_axis("ReduceScatter", axis)
    return _collective_layer(
        f"ReduceScatter({axis_name!r}, axis={axis})",
        lambda x: reduce_scatter_forward(x, axis_name, axis % x.ndim),
        lambda dy: reduce_scatter_backward(dy, axis_name, axis % dy.ndim),
    )


# ---------------------------------------------------------- tensor-parallel parameters


@jax.tree_util.register_pytree_with_keys_class
class ShardedParams:
    """The {'W', 'b'} of a tensor-parallel Dense, tagged with the mesh axis they split over.

    split="column": W (in, out) is cut along out, b (out,) with it.
    split="row":    W (in, out) is cut along in; b (out,) is replicated.
    Index it like Dense's dict (`params["W"]`). It is a pytree node whose tag travels with
    it, so gradients, optimizer moments and checkpoints keep it, and `partition_specs` reads
    each leaf's `PartitionSpec` off it.
    """

    __slots__ = ("W", "b", "axis_name", "split")

    def __init__(self, W, b, axis_name, split):
        self.W, self.b, self.axis_name, self.split = W, b, axis_name, split

    def __getitem__(self, name):
        if name not in ("W", "b"):
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name):
        return name in ("W", "b")

    def tree_flatten_with_keys(self):
        keys = jax.tree_util.DictKey
        return ((keys("W"), self.W), (keys("b"), self.b)), (self.axis_name, self.split)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def specs(self) -> ShardedParams:
        """The PartitionSpecs of W and b (in the same node type)."""
        if self.split == "column":
            return ShardedParams(P(None, self.axis_name), P(self.axis_name), *self._aux())
        return ShardedParams(P(self.axis_name, None), P(), *self._aux())

    def _aux(self):
        return self.axis_name, self.split

    def __repr__(self):
        return f"ShardedParams(W={self.W!r}, b={self.b!r}, axis={self.axis_name!r}, {self.split})"


def _check_dense_input(name, x, in_dim):
    check_float_input(name, x)
    if x.ndim < 2 or x.shape[-1] != in_dim:
        raise ValueError(
            f"{name}: expected input of shape (batch, ..., {in_dim}) on each device, "
            f"got {tuple(x.shape)}"
        )


def _parallel_dense_init(name, split, axis_name, features, w_init, b_init):
    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 1:
            raise ValueError(f"{name}: needs per-example input of rank >= 1, got shape {in_shape}")
        p = dense.dense_init(key, in_shape[-1], features, w_init=w_init, b_init=b_init)  # unsplit
        return (*in_shape[:-1], features), ShardedParams(p["W"], p["b"], axis_name, split), ()

    return init


def ColumnParallelDense(
    features: int, *, axis_name: str = MODEL, w_init="xavier_uniform", b_init="zeros"
) -> Layer:
    """Dense z = a W + b with W's columns split over `axis_name`: device i holds W_i (in, out/n)
    and b_i and computes z_i = f(a) W_i + b_i, its block of z (f = `Replicate`).

        forward:  z_i = a W_i + b_i                          (no communication)
        backward: ∂W_i = aᵀ δ_i,  ∂b_i = Σ_batch δ_i,  ∂a = Σ_i δ_i W_iᵀ   (all-reduce)

    Initialised (from the same key) exactly like `Dense(features)`; `init` gives the global
    (unsplit) parameters and `partition_specs` tells the mesh how to cut them. features must
    be divisible by the axis size.
    """
    name = f"ColumnParallelDense({features}, {axis_name!r})"
    features = positive_int(name, "features", features)

    def forward(params, state, x, *, key=None, train=False):
        _check_dense_input(name, x, params["W"].shape[0])
        z, res = dense.dense_forward(
            {"W": params.W, "b": params.b}, replicate_forward(x, axis_name)
        )
        return z, res, state

    def backward(params, residuals, dz):
        d, da_i = dense.dense_backward(
            {"W": params.W, "b": params.b}, residuals, dz
        )  # da_i = δ_i W_iᵀ
        return ShardedParams(d["W"], d["b"], *params._aux()), replicate_backward(da_i, axis_name)

    init = _parallel_dense_init(name, "column", axis_name, features, w_init, b_init)
    return Layer(init, forward, backward, name)


def RowParallelDense(
    features: int, *, axis_name: str = MODEL, w_init="xavier_uniform", b_init="zeros"
) -> Layer:
    """Dense z = a W + b with W's rows split over `axis_name`: device i holds the input block
    a_i (in/n features, e.g. from a `ColumnParallelDense`) and W_i (in/n, out); the partial
    products are summed by g = `AllReduce` and the replicated b added once.

        forward:  z = Σ_i a_i W_i + b                         (one all-reduce)
        backward: ∂W_i = a_iᵀ δ,  ∂b = Σ_batch δ,  ∂a_i = δ W_iᵀ   (no communication)
    """
    name = f"RowParallelDense({features}, {axis_name!r})"
    features = positive_int(name, "features", features)

    def forward(params, state, x, *, key=None, train=False):
        _check_dense_input(name, x, params["W"].shape[0])
        partial, res = dense.dense_forward({"W": params.W}, x)  # a_i W_i: (..., out)
        return all_reduce_forward(partial, axis_name) + params.b, res, state

    def backward(params, residuals, dz):
        dz = all_reduce_backward(dz, axis_name)
        d, da_i = dense.dense_backward({"W": params.W}, residuals, dz)
        db = dz.reshape(-1, dz.shape[-1]).sum(axis=0)  # (out,)
        return ShardedParams(d["W"], db, *params._aux()), da_i

    init = _parallel_dense_init(name, "row", axis_name, features, w_init, b_init)
    return Layer(init, forward, backward, name)


def TensorParallelMLP(
    hidden_features: int, features: int, *, activation=Gelu, axis_name: str = MODEL
) -> Layer:
    """The Megatron MLP block: ColumnParallelDense(hidden_features) → activation() →
    RowParallelDense(features).

    The activation acts on each device's block of hidden units, so the block needs one
    all-reduce in the forward (after the row-parallel product) and one in the backward (the
    input gradient of the column-parallel layer). `activation` is a Layer constructor
    (default `Gelu`).
    """
    return serial(
        ColumnParallelDense(hidden_features, axis_name=axis_name),
        activation(),
        RowParallelDense(features, axis_name=axis_name),
        name=f"TensorParallelMLP({hidden_features}, {features}, {axis_name!r})",
    )


# ------------------------------------------------------------------- specs and placement


def _is_sharded(node) -> bool:
    return isinstance(node, ShardedParams)


def partition_specs(tree, mesh: Mesh | None = None):
    """A PartitionSpec for every leaf of `tree` (params, optimizer state, a whole TrainState):
    the split of each `ShardedParams` leaf, P() (replicated) for everything else. A
    ShardedParams whose axis is not in `mesh` is replicated (it then runs unsplit)."""

    def spec(node):
        if _is_sharded(node):
            if mesh is not None and node.axis_name not in mesh.axis_names:
                return ShardedParams(P(), P(), *node._aux())
            return node.specs()
        return P()

    return jax.tree.map(spec, tree, is_leaf=_is_sharded)


def _check_divisible(leaf, spec, mesh, where):
    for dim, axis in enumerate(spec):
        if axis is None:
            continue
        n = mesh.shape[axis]
        if np.shape(leaf)[dim] % n:
            raise ValueError(
                f"{where}: dimension {dim} of shape {tuple(np.shape(leaf))} does not split "
                f"evenly over the {n} devices of mesh axis {axis!r}"
            )


def _put(leaf, sharding):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    # many processes: every process holds the same host value and contributes its shards
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def shard(tree, mesh: Mesh, specs=None):
    """Place every leaf of `tree` on `mesh` as `partition_specs` (or `specs`) says."""
    specs = partition_specs(tree, mesh) if specs is None else specs
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves, treedef = jax.tree.flatten(tree)
    flat_specs = treedef.flatten_up_to(specs)
    placed = []
    for (path, _), leaf, spec in zip(paths, leaves, flat_specs):
        _check_divisible(leaf, spec, mesh, f"shard: leaf {jax.tree_util.keystr(path)}")
        placed.append(_put(leaf, NamedSharding(mesh, spec)))
    return jax.tree.unflatten(treedef, placed)


def _data_size(mesh, data_axis) -> int:
    return mesh.shape[data_axis] if data_axis in mesh.axis_names else 1


def _batch_spec(mesh, data_axis, leading: int = 0):
    axis = data_axis if data_axis in mesh.axis_names else None
    return P(*([None] * leading), axis)


def shard_batch(batch, mesh: Mesh, data_axis: str = DATA, *, leading: int = 0):
    """Place a global batch (the same host arrays on every process) with its rows split over
    `data_axis`; `leading` axes before the rows (e.g. K steps) stay whole."""
    spec = _batch_spec(mesh, data_axis, leading)
    return jax.tree.map(lambda a: _put(a, NamedSharding(mesh, spec)), batch)


def check_batch(where, x, mesh, data_axis=DATA, leading: int = 0):
    """ValueError unless every leaf's row count splits evenly over the data axis."""
    for leaf in jax.tree.leaves(x):
        _check_rows(where, np.shape(leaf)[leading], mesh, data_axis)


def _check_rows(where, rows, mesh, data_axis):
    n = _data_size(mesh, data_axis)
    if rows % n:
        raise ValueError(
            f"{where}: a batch of {rows} rows does not split evenly over the {n} devices "
            f"of mesh axis {data_axis!r}; use a batch size that is a multiple of {n} "
            f"(each device then takes batch/{n} rows)"
        )


# ------------------------------------------------------------------ data parallelism


def data_parallel(model: Layer, *, axis_name: str = DATA) -> Layer:
    """`model` with its parameters replicated over `axis_name` (the data axis): each device
    runs forward and backward on its own rows, and the backward of the replication sums the
    devices' parameter gradients, dθ = Σ_i dθ_i (`replicate_backward`, one all-reduce).

    The layers' PRNG key is folded with the device's index on the axis (independent dropout
    masks per device); floating-point layer state (batch-norm running statistics) is averaged
    over the axis so that every replica keeps the same state. Batch norm itself normalises
    each device's rows with that device's statistics (as PyTorch DDP without SyncBatchNorm).
    """

    def forward(params, state, x, *, key=None, train=False):
        if key is not None and axis_bound(axis_name):
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        y, residuals, new_state = model.forward(params, state, x, key=key, train=train)
        return y, residuals, _mean_over(new_state, axis_name)

    def backward(params, residuals, dy):
        dparams, dx = model.backward(params, residuals, dy)
        return replicate_backward(dparams, axis_name), dx

    def children(params, state, x, *, key=None, train=False):
        if key is not None and axis_bound(axis_name):
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        return (Child("data_parallel[0]", model, params, state, x, key),)

    name = f"data_parallel({model.name}, {axis_name!r})"
    return Layer(model.init, forward, backward, name, children)


def _mean_over(tree, axis_name):
    if not axis_bound(axis_name):
        return tree

    def mean(a):
        return jax.lax.pmean(a, axis_name) if jnp.issubdtype(a.dtype, jnp.inexact) else a

    return jax.tree.map(mean, tree)


def data_mean(loss: Loss, *, axis_name: str = DATA) -> Loss:
    """The global loss over the data axis, L = (1/n) Σ_i L_i (each L_i the mean over device
    i's equal share of rows, so L is the mean over all rows).

        forward:  L = pmean_i L_i                     (all-reduce of one scalar)
        backward: ∂L/∂ŷ_i = (g/n) ∂L_i/∂ŷ_i           (no communication)
    """

    def forward(pred, target):
        value, residuals = loss.forward(pred, target)
        if not axis_bound(axis_name):
            return value, residuals
        return jax.lax.pmean(value, axis_name), residuals

    def backward(residuals, g=1.0):
        n = jax.lax.axis_size(axis_name) if axis_bound(axis_name) else 1
        return loss.backward(residuals, g / n)

    return Loss(forward, backward, f"data_mean({loss.name}, {axis_name!r})")


def shard_map_step(step, mesh: Mesh, *, data_axis: str = DATA, leading: int = 0):
    """`step(state, x, y) -> (state, loss)` run inside `jax.shard_map` over `mesh`: x and y
    split by rows over `data_axis` (after `leading` axes, e.g. K steps; absent from the mesh:
    replicated), the state as `partition_specs` says (replicated except the `ShardedParams`
    of tensor-parallel layers), the loss replicated. `step` must make its gradients global
    itself (`data_parallel`, `data_mean`): `jaxbp.step.make_train_step(..., mesh=mesh)` does.
    The batch must split evenly (ValueError otherwise).
    """
    batch_spec = _batch_spec(mesh, data_axis, leading)

    def sharded(state, x, y):
        check_batch("make_train_step", (x, y), mesh, data_axis, leading)
        specs = partition_specs(state, mesh)
        mapped = jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(specs, batch_spec, batch_spec),
            out_specs=(specs, P()),
            check_vma=False,
        )
        return mapped(state, x, y)

    return sharded


def placed(compiled, mesh: Mesh, *, data_axis: str = DATA, leading: int = 0):
    """`compiled(state, x, y)` called with the state and the batch placed on `mesh` first
    (`shard`, `shard_batch`); `.lower(state, x, y)` lowers it the same way."""

    def place(state, x, y):
        check_batch("make_train_step", (x, y), mesh, data_axis, leading)
        return (shard(state, mesh), *shard_batch((x, y), mesh, data_axis, leading=leading))

    def call(state, x, y):
        return compiled(*place(state, x, y))

    call.lower = lambda state, x, y: compiled.lower(*place(state, x, y))
    return call


class PlacedOnce:
    """Replicated copies on the mesh of host arrays (a training set, an epoch's rows), made
    once per array object; the last few are kept (each with its source, so ids stay unique)."""

    def __init__(self, mesh, size: int = 3):
        self.sharding, self.size, self.cache = NamedSharding(mesh, P()), size, {}

    def __call__(self, a) -> Any:
        if id(a) not in self.cache:
            if len(self.cache) >= self.size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[id(a)] = (a, _put(a, self.sharding))
        return self.cache[id(a)][1]
