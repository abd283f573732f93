import jax, jax.numpy as jnp
from jax import lax
from jaxbp.layers import recurrent as R
import jaxbp
from jaxbp import losses

def rnn_backward2(params, residuals, dy, *, activation="tanh"):
    x, h0, hs, m = residuals
    W, U = params["W"], params["U"]
    T = hs.shape[1]
    def step(dh, inputs):
        t, m_t = inputs
        h_t = lax.dynamic_index_in_dim(hs, t, axis=1, keepdims=False)
        g = dh + lax.dynamic_index_in_dim(dy, t, axis=1, keepdims=False)
        delta = g * (1 - h_t * h_t)
        return delta @ U.T, delta
    dh0, deltas = lax.scan(step, jnp.zeros_like(h0), (jnp.arange(T), m), reverse=True)
    h_prev = jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)  # (B,T,H)
    dparams = {"W": jnp.einsum("btf,tbh->fh", x, deltas), "U": jnp.einsum("bti,tbh->ih", h_prev, deltas), "b": deltas.sum((0, 1))}
    dx = jnp.einsum("tbh,fh->btf", deltas, W)
    return dparams, dx, dh0

import experiments.bench_rnn as bb
from jax import numpy as jnp
for variant in ["old", "new"]:
    if variant == "new":
        R.rnn_backward = jax.jit(rnn_backward2, static_argnames=("activation",))
    model = jaxbp.serial(jaxbp.layers.recurrent._recurrent_layer("RNN", 128, True, lambda k, f: R.rnn_init(k, f, 128), lambda p, x, h0, mask, **kw: R.rnn_forward(p, x, h0, mask, **kw), lambda p, r, dy: R.rnn_backward(p, r, dy), ("h0",)), jaxbp.Dense(1))
    loss = losses.mse()
    _, params, state = model.init(jax.random.key(0), (50, 64))
    x = jax.random.normal(jax.random.key(1), (32, 50, 64)); y = jnp.ones((32, 50, 1))
    m, a = bb.gradient_functions(model, loss, state)
    print(variant, bb.temp_bytes(m, params, x, y) / 2**20, bb.temp_bytes(a, params, x, y) / 2**20)
    g1 = jax.jit(m)(params, x, y)[1]; g2 = jax.jit(a)(params, x, y)[1]
    print(max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(g1), jax.tree.leaves(g2))))
    print(bb.interleaved_medians([jax.jit(m), jax.jit(a)], (params, x, y), 10))
