import json

import jax
import jax.numpy as jnp
import numpy as np

from experiments import vanishing_gradients as vg


def test_layer_statistics_read_the_manual_deltas(key):
    """The δ_l walked out layer by layer are ∂L/∂z_l: compare with jax.grad through z_l."""
    depth, width = 3, 6
    params = vg.init_params(key, depth, width, width, 4, "xavier")
    x = jax.random.normal(jax.random.key(1), (5, width))
    y = jnp.array([0, 1, 2, 3, 0])
    stats = vg.layer_statistics(params, x, y, "tanh")

    def loss_given_z(zs):  # zs: additive perturbations of every pre-activation
        h = x
        for p, dz in zip(params[:-1], zs, strict=True):
            h = jnp.tanh(h @ p["W"] + p["b"] + dz)
        logits = h @ params[-1]["W"] + params[-1]["b"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(5), y])

    deltas = jax.grad(loss_given_z)([jnp.zeros((5, width))] * depth)
    np.testing.assert_allclose(stats["delta_std"], [float(jnp.std(d)) for d in deltas], rtol=1e-9)
    assert len(stats["z_var"]) == len(stats["dW_std"]) == depth


def test_std_does_not_underflow_in_float32():
    v = jnp.array([1e-22, -1e-22, 3e-22], jnp.float32)
    assert float(jnp.std(v)) == 0.0  # the plain formula squares to 0 in float32
    np.testing.assert_allclose(float(vg._std(v)), float(np.std(np.asarray(v, np.float64))), 1e-5)


def test_tiny_run_reproduces_the_published_directions(tmp_path):
    result = vg.main(["--tiny", "--out", str(tmp_path)])
    glorot = result["glorot_check"]
    for s in glorot["classic"]:  # classic init vanishes much more than Xavier, at every scale
        assert glorot["classic"][s]["mean"] < 0.5 * glorot["xavier"][s]["mean"]
    assert glorot["classic"]["1.0"]["mean"] < 0.3
    he = result["he_check"]  # ReLU: Var[W] = 1/n halves the variance per layer, He does not
    assert he["xavier"]["log2_var_slope_per_layer"] < -0.5
    assert he["he"]["log2_var_slope_per_layer"] > he["xavier"]["log2_var_slope_per_layer"] + 0.3
    accs = [r["test_accuracy"] for r in result["training"]["runs"].values()]
    assert len(accs) == 9 and max(accs) > 0.3  # something learns (chance is 0.1)
    saved = json.loads((tmp_path / "vanishing_gradients.json").read_text())
    assert set(saved["heat_maps"]) == {f"{a}/{i}" for a in vg.ACTIVATIONS for i in vg.INITS}
    assert len(list(tmp_path.glob("vanishing_*.png"))) == 10
