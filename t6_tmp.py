import jax, jax.numpy as jnp
a = jnp.ones((1600, 64)); b = jnp.ones((1600, 384))
def mem(f, *args): return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes / 1024
print("aT b", mem(lambda a, b: a.T @ b, a, b), "KiB; b is", b.size * 4 / 1024)
print("einsum", mem(lambda a, b: jnp.einsum("nf,ng->fg", a, b), a, b))
a3 = jnp.ones((32, 50, 64)); b3 = jnp.ones((50, 32, 384))
print("btf,tbg", mem(lambda a, b: jnp.einsum("btf,tbg->fg", a, b), a3, b3))
print("tbf,tbg", mem(lambda a, b: jnp.einsum("tbf,tbg->fg", a, b), b3[..., :64], b3))
print("b.T a", mem(lambda a, b: (b.T @ a).T, a, b))
print("lax.dot_general", mem(lambda a, b: jax.lax.dot_general(a, b, (((0,), (0,)), ((), ()))), a, b))
