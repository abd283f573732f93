"""The reference implementations `backprop_cost` times jaxbp against: NumPy forwards with
hand-written backwards (the article's style, written correctly) and PyTorch eager, for the MLP,
CNN and recurrent workloads.

Every reference is built from the same parameters as the jaxbp model and returns a
zero-argument `step() -> (loss, [gradient arrays in the order of jax.tree.leaves(jaxbp's
grads)])`; `backprop_cost.reference_errors` checks them against jaxbp before any time is
reported. PyTorch is optional: its builders return None when `import torch` fails.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

LR = 1e-3  # SGD learning rate of the train-step measurements (its value does not matter here)

# ---------------------------------------------------------------------------- shared helpers


def _import_torch():
    """PyTorch, or None where `import torch` fails: the PyTorch references are optional."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_value_and_grad(leaves, loss_of_params):
    """() -> (loss, [∂loss/∂leaf for each leaf]): one eager forward and `loss.backward()`."""

    def step():
        for leaf in leaves:
            leaf.grad = None
        loss = loss_of_params()
        loss.backward()
        return loss, [leaf.grad for leaf in leaves]

    return step


def _np_softmax_cross_entropy(z, labels):
    """L = −1/n Σᵢ log softmax(zᵢ)[labelᵢ] and δ = ∂L/∂z = (softmax(z) − onehot(labels))/n."""
    n = z.shape[0]
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), labels]).mean()
    p[np.arange(n), labels] -= 1
    return loss, p / n


def _dict_leaves(d: dict) -> list:
    """A dict's values in `jax.tree.leaves` order (sorted keys)."""
    return [d[k] for k in sorted(d)]


def numpy_params(params) -> list[dict]:
    """jaxbp's per-layer params (a tuple of dicts, `()` for layers without any) as NumPy copies."""
    return [{k: np.array(v) for k, v in p.items()} if isinstance(p, dict) else {} for p in params]


# ------------------------------------------------------------------------------------ MLPs


def numpy_mlp(Ws, bs, x, y, classify: bool):
    """Forward and hand-written backward of a ReLU MLP in NumPy (float32).

    z_l = a_{l-1} W_l + b_l, a_l = relu(z_l); output z_L; loss softmax cross-entropy (labels)
    or ½‖z_L − y‖²/n. Backward: δ_L = ∂L/∂z_L; ∂L/∂W_l = a_{l-1}ᵀ δ_l; ∂L/∂b_l = Σ δ_l;
    δ_{l-1} = (δ_l W_lᵀ) ⊙ [z_{l-1} > 0].
    """
    n = x.shape[0]

    def step():
        acts = [x]
        for W, b in zip(Ws[:-1], bs[:-1], strict=True):
            acts.append(np.maximum(acts[-1] @ W + b, 0))
        z = acts[-1] @ Ws[-1] + bs[-1]
        if classify:
            loss, delta = _np_softmax_cross_entropy(z, y)
        else:
            err = z - y
            loss = 0.5 * np.sum(err * err) / n
            delta = err / n
        grads = []
        for layer in reversed(range(len(Ws))):
            a = acts[layer]
            grads = [a.T @ delta, delta.sum(axis=0)] + grads
            if layer > 0:
                delta = (delta @ Ws[layer].T) * (a > 0)
        return loss, grads  # [dW_1, db_1, dW_2, db_2, ...]

    def sgd():
        loss, grads = step()
        for W, b, dW, db in zip(Ws, bs, grads[0::2], grads[1::2], strict=True):
            W -= LR * dW
            b -= LR * db
        return loss

    return step, sgd


def torch_mlp(Ws, bs, x, y, classify: bool):
    torch = _import_torch()
    if torch is None:
        return None, None
    Wt = [torch.tensor(W, requires_grad=True) for W in Ws]
    bt = [torch.tensor(b, requires_grad=True) for b in bs]
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64) if classify else y)
    params = [p for pair in zip(Wt, bt, strict=True) for p in pair]  # [W_1, b_1, W_2, ...]

    def loss_of_params():
        a = xt
        for W, b in zip(Wt[:-1], bt[:-1], strict=True):
            a = torch.relu(torch.addmm(b, a, W))
        z = torch.addmm(bt[-1], a, Wt[-1])
        if classify:
            return torch.nn.functional.cross_entropy(z, yt)
        return 0.5 * ((z - yt) ** 2).sum() / z.shape[0]

    step = _torch_value_and_grad(params, loss_of_params)

    def sgd():
        loss, _ = step()
        with torch.no_grad():
            for p in params:
                p -= LR * p.grad
        return loss

    return step, sgd


# ------------------------------------------------------------------------------------ CNNs

# The layers of each CNN as the NumPy and PyTorch references build them, one entry per layer of
# the jaxbp model (which comes from the imported builder): ("reshape", per-example shape),
# ("conv", stride, padding), ("relu",), ("flatten",), ("global_avg_pool",), ("dense",).
# Kernel sizes and channels are read from the parameters. `cnn_problem` checks that the entries
# with parameters line up with the model's, and `reference_errors` that the numbers agree.
MNIST1D_CNN_LAYERS = (  # experiments.mnist1d.cnn: three Conv1D(k = 5, 3, 3; stride 2, padding 1)
    ("reshape", (40, 1)), ("conv", 2, 1), ("relu",), ("conv", 2, 1), ("relu",), ("conv", 2, 1),
    ("relu",), ("flatten",), ("dense",),
)  # fmt: skip
CNN2D_LAYERS = (  # experiments.bench_cnn.cnn2d: 3×3 convs, strides 1, 2, 2, SAME padding
    ("conv", 1, "SAME"), ("relu",), ("conv", 2, "SAME"), ("relu",), ("conv", 2, "SAME"),
    ("relu",), ("global_avg_pool",), ("dense",),
)  # fmt: skip


def conv_padding(padding, spatial, kernel, stride: int) -> list[tuple[int, int]]:
    """(lo, hi) per spatial axis: an int p pads p on both sides; 'SAME' pads so that there are
    ⌈n/s⌉ outputs, the odd pixel on the right (TensorFlow's rule, and jaxbp's)."""
    if padding != "SAME":
        return [(padding, padding)] * len(spatial)
    totals = [max((-(-n // stride) - 1) * stride + k - n, 0) for n, k in zip(spatial, kernel)]
    return [(t // 2, t - t // 2) for t in totals]


def conv_output_size(spatial, kernel, stride: int, pads) -> tuple[int, ...]:
    """⌊(n + lo + hi − k)/s⌋ + 1 per spatial axis."""
    return tuple(
        (n + lo + hi - k) // stride + 1 for n, k, (lo, hi) in zip(spatial, kernel, pads)
    )  # fmt: skip


def _np_conv(p, stride: int, padding):
    """Convolution by im2col, channels-last as jaxbp. The K kernel taps of the padded input x̃
    are stacked as columns, cols[n, t, k, i] = x̃[n, t·s + k, i], so that

        y = cols W + b          cols (N·P, K·C_in), W reshaped to (K·C_in, C_out)
        ∂L/∂W = colsᵀ δ,   ∂L/∂b = Σ δ,   ∂L/∂cols = δ Wᵀ,

    and ∂L/∂x adds each tap's columns back where that tap read them (col2im), padding cut off.
    """
    W, b = p["W"], p["b"]
    nd = W.ndim - 2
    kernel, c_out = W.shape[:nd], W.shape[-1]
    W_2d = W.reshape(-1, c_out)  # (K·C_in, C_out), taps in row-major order
    taps = list(itertools.product(*(range(k) for k in kernel)))

    def tap_view(tap, out):  # index of x̃[:, t·s + tap, :] for every output position t
        return (slice(None), *(slice(k, k + stride * (o - 1) + 1, stride)
                               for k, o in zip(tap, out)), slice(None))  # fmt: skip

    def forward(x):  # (N, *spatial, C_in) -> (N, *out, C_out)
        pads = conv_padding(padding, x.shape[1:-1], kernel, stride)
        x_pad = np.pad(x, [(0, 0), *pads, (0, 0)])
        out = conv_output_size(x.shape[1:-1], kernel, stride, pads)
        cols = np.stack([x_pad[tap_view(tap, out)] for tap in taps], axis=-2)  # (N, *out, K, C_in)
        y = cols.reshape(-1, W_2d.shape[0]) @ W_2d + b
        return y.reshape(x.shape[0], *out, c_out), (cols, x_pad.shape, pads)

    def backward(cache, dy, need_dx):
        cols, padded_shape, pads = cache
        delta = dy.reshape(-1, c_out)  # (N·P, C_out)
        grads = [(cols.reshape(len(delta), -1).T @ delta).reshape(W.shape), delta.sum(axis=0)]
        if not need_dx:
            return grads, None
        dcols = (delta @ W_2d.T).reshape(cols.shape)  # (N, *out, K, C_in)
        dx_pad = np.zeros(padded_shape, dy.dtype)
        for j, tap in enumerate(taps):
            dx_pad[tap_view(tap, dy.shape[1:-1])] += dcols[..., j, :]
        inside = tuple(slice(lo, n - hi) for (lo, hi), n in zip(pads, padded_shape[1:-1]))
        return grads, dx_pad[(slice(None), *inside, slice(None))]

    return forward, backward


def _np_dense(p):
    """z = a W + b;  ∂W = aᵀ δ,  ∂b = Σ δ,  ∂a = δ Wᵀ."""

    def forward(a):
        return a @ p["W"] + p["b"], a

    def backward(a, delta, need_dx):
        grads = [a.T @ delta, delta.sum(axis=0)]
        return grads, (delta @ p["W"].T if need_dx else None)

    return forward, backward


def _np_shape_layer(op):
    """ReLU (δ ⊙ [x > 0]), reshape and flatten (δ reshaped back), global average pooling over
    the spatial axes (δ/P broadcast back): the layers without parameters."""
    kind = op[0]

    def forward(a):
        if kind == "relu":
            return np.maximum(a, 0), a > 0
        if kind == "global_avg_pool":
            return a.mean(axis=tuple(range(1, a.ndim - 1))), a.shape
        new_shape = op[1] if kind == "reshape" else (-1,)
        return a.reshape(a.shape[0], *new_shape), a.shape

    def backward(cache, delta, need_dx):
        if kind == "relu":
            return [], delta * cache
        if kind == "global_avg_pool":
            spatial = cache[1:-1]
            per_position = (delta / math.prod(spatial)).reshape(cache[0], *[1] * len(spatial), -1)
            return [], np.broadcast_to(per_position, cache)
        return [], delta.reshape(cache)

    return forward, backward


def numpy_cnn(layers, params, x, labels):
    """Forward and hand-written backward of a CNN in NumPy (float32), softmax cross-entropy;
    each layer a (forward, backward) pair, the backward walks them in reverse (δ_{l−1} from
    δ_l) and stops at the first layer with parameters (nothing below needs δ)."""
    net = []
    for op, p in zip(layers, params, strict=True):
        if op[0] == "conv":
            net.append(_np_conv(p, op[1], op[2]))
        elif op[0] == "dense":
            net.append(_np_dense(p))
        else:
            net.append(_np_shape_layer(op))
    first = min(i for i, p in enumerate(params) if p)

    def step():
        a, caches = x, []
        for forward, _ in net:
            a, cache = forward(a)
            caches.append(cache)
        loss, delta = _np_softmax_cross_entropy(a, labels)
        grads = []
        for i in reversed(range(first, len(net))):
            layer_grads, delta = net[i][1](caches[i], delta, i > first)
            grads = layer_grads + grads
        return loss, grads  # [dW, db] per layer with parameters, in order

    return step


def torch_cnn(layers, params, x, labels):
    """The CNN in PyTorch eager (functional), from the same parameters: activations stay
    channels-last as in jaxbp (flatten order included); each convolution views its input and
    kernel in torch's layout, (N, C, *spatial) and (C_out, C_in, *window)."""
    torch = _import_torch()
    if torch is None:
        return None
    F = torch.nn.functional
    tensors = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in params]

    def conv(p, stride, padding):
        W = p["W"]
        nd = W.ndim - 2
        conv_nd = F.conv1d if nd == 1 else F.conv2d

        def apply(a):
            pads = conv_padding(padding, a.shape[1:-1], W.shape[:nd], stride)
            a = a.movedim(-1, 1)  # (N, C_in, *spatial)
            kernel = W.permute(nd + 1, nd, *range(nd))  # (C_out, C_in, *window)
            if all(lo == hi for lo, hi in pads):
                y = conv_nd(a, kernel, p["b"], stride, padding=[lo for lo, _ in pads])
            else:  # F.pad takes (lo, hi) pairs from the last axis backwards
                a = F.pad(a, [v for pair in reversed(pads) for v in pair])
                y = conv_nd(a, kernel, p["b"], stride)
            return y.movedim(1, -1)  # (N, *out, C_out)

        return apply

    def layer(op, p):
        kind = op[0]
        if kind == "conv":
            return conv(p, op[1], op[2])
        if kind == "dense":
            return lambda a: torch.addmm(p["b"], a, p["W"])
        if kind == "relu":
            return torch.relu
        if kind == "global_avg_pool":
            return lambda a: a.mean(dim=tuple(range(1, a.ndim - 1)))
        new_shape = op[1] if kind == "reshape" else (-1,)
        return lambda a: a.reshape(a.shape[0], *new_shape)

    net = [layer(op, p) for op, p in zip(layers, tensors, strict=True)]
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))

    def loss_of_params():
        a = xt
        for apply in net:
            a = apply(a)
        return F.cross_entropy(a, yt)

    return _torch_value_and_grad([t for p in tensors for t in _dict_leaves(p)], loss_of_params)


# ------------------------------------------------------------------------------ recurrent

# One step of each cell, written once for NumPy and PyTorch (`sigmoid`, `tanh` from either),
# with jaxbp's parameter layout: W (F, G), U (H, G), b (G,), gate blocks in jaxbp's order.
# a_t = x_t W + b is computed for all steps before the loop. Returns (new state, cache), the
# cache holding what the NumPy backward of the step needs.


def _rnn_step(p, a_t, state, sigmoid, tanh):
    """h_t = tanh(a_t + h_{t−1} U)."""
    (h_prev,) = state
    h = tanh(a_t + h_prev @ p["U"])
    return (h,), (h,)


def _lstm_step(p, a_t, state, sigmoid, tanh):
    """z = a_t + h_{t−1} U = [z_i, z_f, z_g, z_o];  i, f, o = σ(z_i, z_f, z_o), g = tanh(z_g);
    c_t = f ⊙ c_{t−1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)."""
    h_prev, c_prev = state
    H = h_prev.shape[-1]
    z = a_t + h_prev @ p["U"]  # (B, 4H)
    i, f, o = sigmoid(z[:, :H]), sigmoid(z[:, H : 2 * H]), sigmoid(z[:, 3 * H :])
    g = tanh(z[:, 2 * H : 3 * H])
    c = f * c_prev + i * g
    tanh_c = tanh(c)
    return (o * tanh_c, c), (i, f, g, o, c_prev, tanh_c)


def _gru_step(p, a_t, state, sigmoid, tanh):
    """s = h_{t−1} U = [s_r, s_u, s_n], a_t = [a_r, a_u, a_n];  r = σ(a_r + s_r),
    u = σ(a_u + s_u);  q = s_n + b_hn,  n = tanh(a_n + r ⊙ q);  h_t = (1 − u) ⊙ n + u ⊙ h_{t−1}."""
    (h_prev,) = state
    H = h_prev.shape[-1]
    s = h_prev @ p["U"]  # (B, 3H)
    r = sigmoid(a_t[:, :H] + s[:, :H])
    u = sigmoid(a_t[:, H : 2 * H] + s[:, H : 2 * H])
    q = s[:, 2 * H :] + p["b_hn"]
    n = tanh(a_t[:, 2 * H :] + r * q)
    return ((1 - u) * n + u * h_prev,), (h_prev, r, u, n, q)


# The backward of one step (NumPy): from the cache and the state gradients (∂L/∂h_t total, and
# ∂L/∂c_t for the LSTM) to (δ_in, δ_rec, state gradients at t − 1), where δ_in = ∂L/∂a_t gives
# ∂W = Σ x_tᵀ δ_in and ∂b = Σ δ_in, and δ_rec = ∂L/∂(h_{t−1} U) gives ∂U = Σ h_{t−1}ᵀ δ_rec.


def _rnn_step_back(p, cache, dstate):
    """δ = ∂L/∂h_t ⊙ (1 − h_t²);  ∂L/∂h_{t−1} = δ Uᵀ."""
    ((h,), (dh,)) = cache, dstate
    delta = dh * (1 - h * h)
    return delta, delta, (delta @ p["U"].T,)


def _lstm_step_back(p, cache, dstate):
    """δ_o = g_h ⊙ tanh(c_t) ⊙ o(1 − o);  g_c = ∂L/∂c_t + g_h ⊙ o ⊙ (1 − tanh²(c_t));
    δ_i = g_c ⊙ g ⊙ i(1 − i);  δ_f = g_c ⊙ c_{t−1} ⊙ f(1 − f);  δ_g = g_c ⊙ i ⊙ (1 − g²);
    ∂L/∂h_{t−1} = δ Uᵀ,  ∂L/∂c_{t−1} = g_c ⊙ f."""
    i, f, g, o, c_prev, tanh_c = cache
    dh, dc = dstate
    delta_o = dh * tanh_c * o * (1 - o)
    gc = dc + dh * o * (1 - tanh_c * tanh_c)
    delta = np.concatenate(
        [gc * g * i * (1 - i), gc * c_prev * f * (1 - f), gc * i * (1 - g * g), delta_o], axis=-1
    )  # (B, 4H), blocks [i, f, g, o]
    return delta, delta, (delta @ p["U"].T, gc * f)


def _gru_step_back(p, cache, dstate):
    """δ_u = g ⊙ (h_{t−1} − n) ⊙ u(1 − u);  δ_n = g ⊙ (1 − u) ⊙ (1 − n²);
    δ_r = δ_n ⊙ q ⊙ r(1 − r);  δ_q = δ_n ⊙ r  (= ∂L/∂s_n = ∂L/∂b_hn);
    δ_in = [δ_r, δ_u, δ_n],  δ_rec = [δ_r, δ_u, δ_q],  ∂L/∂h_{t−1} = g ⊙ u + δ_rec Uᵀ."""
    h_prev, r, u, n, q = cache
    (dh,) = dstate
    delta_u = dh * (h_prev - n) * u * (1 - u)
    delta_n = dh * (1 - u) * (1 - n * n)
    delta_r = delta_n * q * r * (1 - r)
    delta_rec = np.concatenate([delta_r, delta_u, delta_n * r], axis=-1)  # (B, 3H)
    delta_in = np.concatenate([delta_r, delta_u, delta_n], axis=-1)
    return delta_in, delta_rec, (dh * u + delta_rec @ p["U"].T,)


class _Cell(NamedTuple):
    step: Callable
    step_back: Callable
    n_states: int  # (h,) or (h, c)
    gates: int  # G = gates·H columns of W and U


RECURRENT_CELLS = {
    "RNN": _Cell(_rnn_step, _rnn_step_back, 1, 1),
    "LSTM": _Cell(_lstm_step, _lstm_step_back, 2, 4),
    "GRU": _Cell(_gru_step, _gru_step_back, 1, 3),
}


def _np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_recurrent(cell: str, p: dict, head: dict, x, y):
    """`serial(cell, Dense(1))` with L = mean over (b, t) of (ŷ_t − y_t)² in NumPy (float32):
    forward loop over time, then BPTT — the reverse loop carries the state gradients and
    stores δ_in, δ_rec per step; the weight gradients are single matmuls over all T·B rows
    after it. Inputs are made time-major, (T, B, ·), once."""
    c = RECURRENT_CELLS[cell]
    x_tm, y_tm = np.ascontiguousarray(x.swapaxes(0, 1)), np.ascontiguousarray(y.swapaxes(0, 1))
    T, B, _ = x_tm.shape
    H = p["U"].shape[0]
    rows = lambda a: a.reshape(-1, a.shape[-1])  # (T, B, k) -> (T·B, k)

    def step():
        a = x_tm @ p["W"] + p["b"]  # (T, B, G): every step's input projection, one matmul
        state = (np.zeros((B, H), np.float32),) * c.n_states
        hs, caches = np.empty((T, B, H), np.float32), []
        for t in range(T):
            state, cache = c.step(p, a[t], state, _np_sigmoid, np.tanh)
            hs[t] = state[0]
            caches.append(cache)
        err = hs @ head["W"] + head["b"] - y_tm  # (T, B, 1)
        loss = np.mean(err * err)
        d_pred = 2 * err / err.size
        d_head = {"W": rows(hs).T @ rows(d_pred), "b": d_pred.sum(axis=(0, 1))}
        d_hs = d_pred @ head["W"].T  # (T, B, H): ∂L/∂h_t from the output
        delta_in, delta_rec = np.empty_like(a), np.empty_like(a)
        dstate = (np.zeros((B, H), np.float32),) * c.n_states
        for t in reversed(range(T)):
            dstate = (dstate[0] + d_hs[t], *dstate[1:])
            delta_in[t], delta_rec[t], dstate = c.step_back(p, caches[t], dstate)
        h_prev = np.concatenate([np.zeros((1, B, H), np.float32), hs[:-1]])  # h_0 = 0
        d_cell = {
            "W": rows(x_tm).T @ rows(delta_in),  # (F, G)
            "U": rows(h_prev).T @ rows(delta_rec),  # (H, G)
            "b": delta_in.sum(axis=(0, 1)),
        }
        if "b_hn" in p:
            d_cell["b_hn"] = delta_rec[..., 2 * H :].sum(axis=(0, 1))
        return loss, _dict_leaves(d_cell) + _dict_leaves(d_head)

    return step


def torch_recurrent(cell: str, p: dict, head: dict, x, y):
    """The same model in PyTorch eager: a Python loop over time of the cell's step."""
    torch = _import_torch()
    if torch is None:
        return None
    c = RECURRENT_CELLS[cell]
    p_t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    head_t = {k: torch.tensor(v, requires_grad=True) for k, v in head.items()}
    x_tm = torch.from_numpy(np.ascontiguousarray(x.swapaxes(0, 1)))  # (T, B, F)
    y_tm = torch.from_numpy(np.ascontiguousarray(y.swapaxes(0, 1)))
    T, B, _ = x_tm.shape
    H = p["U"].shape[0]

    def loss_of_params():
        a = x_tm @ p_t["W"] + p_t["b"]
        state, hs = (torch.zeros(B, H),) * c.n_states, []
        for t in range(T):
            state, _ = c.step(p_t, a[t], state, torch.sigmoid, torch.tanh)
            hs.append(state[0])
        pred = torch.stack(hs) @ head_t["W"] + head_t["b"]
        return ((pred - y_tm) ** 2).mean()

    return _torch_value_and_grad(_dict_leaves(p_t) + _dict_leaves(head_t), loss_of_params)
