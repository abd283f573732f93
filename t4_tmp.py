import sys, jax, jax.numpy as jnp
from experiments.bench_rnn import build, gradient_functions, temp_bytes
from jaxbp import losses
cell = sys.argv[1]; which = sys.argv[2]
model, loss = build(cell, 128), losses.mse()
_, params, state = model.init(jax.random.key(0), (50, 64))
x = jnp.ones((32, 50, 64)); y = jnp.ones((32, 50, 1))
m, a = gradient_functions(model, loss, state)
fn = m if which == "manual" else a
c = jax.jit(fn).lower(params, x, y).compile()
print(c.memory_analysis())
