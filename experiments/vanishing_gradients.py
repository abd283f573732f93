"""Vanishing and exploding gradients at initialization, and which deep MLPs learn.

Part 1 — per-layer statistics at initialization. For an MLP of `depth` hidden layers

    z_l = a_{l-1} W_l + b_l,   a_l = f(z_l),   l = 1..depth,   then a Dense output layer,

we run one forward pass and the hand-written backward on a batch of standard-normal inputs with
random labels (softmax cross-entropy) and record, per hidden layer,

* `delta_std[l]`  = std over batch and units of δ_l = ∂L/∂z_l, the back-propagated gradient
  (Glorot & Bengio's ∂Cost/∂s);
* `dW_std[l]`     = std of the weight gradient ∂L/∂W_l = a_{l-1}ᵀ δ_l;
* `z_var[l]`      = variance of the pre-activation z_l (He et al.'s Var[y_l]).

The "gradient ratio" of a network is delta_std[1] / delta_std[depth]: the spread of the
back-propagated gradient at the first hidden layer relative to the last one. 1 means no
vanishing; 0.1 means the lowest layer receives a gradient ten times smaller.

Published findings checked (see docs/cost.md):

* Glorot & Bengio (2010), 5 tanh layers of 1000 units: with the classic U[−1/√n, 1/√n]
  initialization n·Var[W] = 1/3, so in the linear regime Var[δ] shrinks by 3 per layer and the
  gradient ratio is (1/√3)⁴ ≈ 0.11; Xavier keeps n·Var[W] ≈ 1 and the ratio near 1 (only the
  tanh′² < 1 factors remain).
* He et al. (2015), ReLU: Var[z_l] = Var[z_1] ∏ (½ n Var[W]); with Var[W] = 1/n (Xavier on square
  layers) the variance halves per layer (2⁻ᴸ), with He's 2/n it stays constant.

Part 2 — training. 20-layer sigmoid / tanh / ReLU MLPs on the digits data under each
initialization, plain SGD (batch 32; the learning rate picked from a small list by the final
training loss), many minibatch steps per compiled call (lax.scan); we report the
test accuracy and whether the net learned (test accuracy ≥ 0.5; chance is 0.1).

Run:
    python -m experiments.vanishing_gradients            # full size
    python -m experiments.vanishing_gradients --quick    # the size `make demo` runs
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from jaxbp import data as jaxbp_data
from jaxbp import init as initializers
from jaxbp import loop
from jaxbp.layers import dense
from jaxbp.layers.dense import Dense

ACTIVATIONS = {"sigmoid": jaxbp.Sigmoid, "tanh": jaxbp.Tanh, "relu": jaxbp.Relu}
INITS = {
    "classic": initializers.fan_in_uniform(),  # U[−1/√n, 1/√n], n·Var[W] = 1/3
    "xavier": initializers.xavier_uniform(),  # Var[W] = 2/(n_in + n_out) = 1/n when square
    "he": initializers.he_normal(),  # Var[W] = 2/n_in
}


def mlp_layers(depth: int, width: int, n_out: int, activation: str, w_init: str = "xavier"):
    """The flat list [Dense(width), f, ..., Dense(width), f, Dense(n_out)] (depth hidden layers)."""
    layers = []
    for _ in range(depth):
        layers += [Dense(width, w_init=INITS[w_init]), ACTIVATIONS[activation]()]
    layers.append(Dense(n_out, w_init=INITS[w_init]))
    return layers


@functools.cache
def _activation_layer(activation: str):
    return ACTIVATIONS[activation]()


@functools.partial(jax.jit, static_argnames="activation")
def hidden_forward(p, a, activation):
    """One hidden layer z = a W + b, h = f(z), with the residuals its backward needs."""
    z, dense_res = dense.dense_forward(p, a)
    h, act_res, _ = _activation_layer(activation).forward((), (), z)
    return h, z, (dense_res, act_res)


@functools.partial(jax.jit, static_argnames="activation")
def hidden_backward(p, residuals, dh, activation):
    """Its chain rule: δ = ∂L/∂z = f′(z) ⊙ dh, then (∂L/∂W, ∂L/∂b) and ∂L/∂a = δ Wᵀ."""
    dense_res, act_res = residuals
    _, delta = _activation_layer(activation).backward((), act_res, dh)
    dp, da = dense.dense_backward(p, dense_res, delta)
    return dp, da, delta


@jax.jit
def _output_loss_and_delta(p, a, y):
    logits, res = dense.dense_forward(p, a)
    loss = jaxbp.losses.softmax_cross_entropy()
    value, loss_res = loss.forward(logits, y)
    _, da = dense.dense_backward(p, res, loss.backward(loss_res))
    return value, da


def layer_statistics(params, x, y, activation):
    """Forward, then the manual backward walked layer by layer (`serial`'s loop written out so
    that the δ's in between can be read). Per hidden layer: std of δ_l = ∂L/∂z_l, std of
    ∂L/∂W_l and variance of z_l. `params` is a list of Dense parameter dicts, output last.

    Each hidden layer is one compiled call shared by every layer and depth of the same width.
    """
    residuals, z_var = [], []
    h = x
    for p in params[:-1]:
        h, z, res = hidden_forward(p, h, activation)
        residuals.append(res)
        z_var.append(_std(z))
    value, dh = _output_loss_and_delta(params[-1], h, y)  # dh = ∂L/∂a_depth
    delta_std, dW_std = [], []
    for p, res in zip(reversed(params[:-1]), reversed(residuals), strict=True):
        dp, dh, delta = hidden_backward(p, res, dh, activation)
        delta_std.append(_std(delta))
        dW_std.append(_std(dp["W"]))
    return {
        "loss": float(value),
        "delta_std": [float(v) for v in delta_std[::-1]],
        "dW_std": [float(v) for v in dW_std[::-1]],
        "z_var": [float(v) ** 2 for v in z_var],  # squared in float64: no underflow
    }


@jax.jit
def _std(v):
    """Standard deviation computed as m·std(v/m), m = max|v|: no underflow when squaring tiny
    gradients in float32 (a plain std of values near 1e-20 would come out as exactly 0)."""
    m = jnp.max(jnp.abs(v))
    return jnp.where(m > 0, m * jnp.std(v / jnp.where(m > 0, m, 1)), 0)


def init_params(key, depth, width, in_dim, n_out, w_init):
    """Dense parameter dicts of the hidden layers and the output layer (same init for all)."""
    dims = [in_dim] + [width] * depth + [n_out]
    keys = jax.random.split(key, depth + 1)
    shapes = zip(keys, dims[:-1], dims[1:], strict=True)
    return [_dense_init(k, i, o, w_init=INITS[w_init]) for k, i, o in shapes]


# compiled once per (in, out, initializer) and shared by every layer of that shape
_dense_init = jax.jit(dense.dense_init, static_argnums=(1, 2), static_argnames=("w_init",))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _gaussian_batch(key, batch, width, n_classes):
    k_x, k_y = jax.random.split(key)
    return jax.random.normal(k_x, (batch, width)), jax.random.randint(k_y, (batch,), 0, n_classes)


def statistics_at_init(
    depth, width, activation, w_init, *, batch=256, n_classes=10, seed=0, input_std=1.0
):
    """Per-layer statistics of a freshly initialized network on Gaussian inputs N(0, input_std²)."""
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params = init_params(k_init, depth, width, width, n_classes, w_init)
    x, y = _gaussian_batch(k_data, batch, width, n_classes)
    return layer_statistics(params, input_std * x, y, activation)


def gradient_ratio(stats) -> float:
    """std(δ_1) / std(δ_depth): the first hidden layer's gradient spread relative to the last."""
    return stats["delta_std"][0] / stats["delta_std"][-1]


def variance_slope(stats) -> float:
    """Least-squares slope of log2 Var[z_l] against l: −1 means the variance halves per layer."""
    v = np.log2(np.asarray(stats["z_var"]))
    layers = np.arange(1, len(v) + 1)
    return float(np.polyfit(layers, v, 1)[0])


# ----------------------------------------------------------------------------- part 1


STATS = ("delta_std", "dW_std", "z_var")


def _geometric_mean(columns):
    """Per layer, the geometric mean over seeds (0 when a value underflowed to 0)."""
    out = []
    for col in zip(*columns, strict=True):
        col = np.asarray(col, dtype=np.float64)
        out.append(float(np.exp(np.mean(np.log(col)))) if np.all(col > 0) else 0.0)
    return out


def heat_maps(depths, width, seeds, batch):
    """For every (activation, init): per depth, the per-layer stats averaged (in log) over seeds."""
    maps = {}
    for act in ACTIVATIONS:
        for w_init in INITS:
            per_depth = {}
            for depth in depths:
                runs = [
                    statistics_at_init(depth, width, act, w_init, batch=batch, seed=s)
                    for s in range(seeds)
                ]
                per_depth[depth] = {key: _geometric_mean(r[key] for r in runs) for key in STATS}
                per_depth[depth]["gradient_ratio"] = float(
                    np.exp(np.mean([np.log(gradient_ratio(r)) for r in runs]))
                )
            maps[f"{act}/{w_init}"] = per_depth
    return maps


def plot_heat_map(maps, key, depths, path):
    """log10(std δ_l / std δ_depth) as an image: rows = layer l, columns = depth."""
    fig, ax = common.new_figure(figsize=(5.2, 4.2))
    grid = np.full((max(depths), len(depths)), np.nan)
    for j, depth in enumerate(depths):
        d = np.asarray(maps[key][depth]["delta_std"])
        grid[:depth, j] = np.log10(np.maximum(d, 1e-45) / d[-1])  # 0: underflowed in float32
    lim = max(1.0, float(np.nanmax(np.abs(grid))))
    im = ax.imshow(
        grid, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
        extent=(-0.5, len(depths) - 0.5, 0.5, max(depths) + 0.5),
    )  # fmt: skip
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("network depth (hidden layers)")
    ax.set_ylabel("layer l (1 = next to the input)")
    ax.set_title(f"{key}: log10 std(δ_l) / std(δ_depth)", fontsize=9)
    fig.colorbar(im, ax=ax)
    return common.save_figure(fig, path)


def glorot_check(width, seeds, batch, input_stds=(1.0, 0.5, 0.25)):
    """5 tanh layers: the gradient ratio under the classic and the Xavier initialization.

    The ratio under Xavier is roughly ∏ E[tanh′(z_l)²]^½, so it depends on how far the units are
    driven into saturation, i.e. on the scale of the inputs: we report it for several input stds.
    """
    out = {}
    for w_init in ("classic", "xavier"):
        out[w_init] = {}
        for s in input_stds:
            ratios = [
                gradient_ratio(
                    statistics_at_init(5, width, "tanh", w_init, batch=batch, seed=k, input_std=s)
                )
                for k in range(seeds)
            ]
            out[w_init][str(s)] = {"mean": float(np.mean(ratios)), "std": float(np.std(ratios))}
    out["classic_linear_regime_prediction"] = (1 / math.sqrt(3)) ** 4
    out["published"] = {"classic": 0.1, "xavier": 0.6}
    out["quantity"] = "std(dL/dz_1) / std(dL/dz_5), 5 tanh hidden layers, inputs N(0, s^2)"
    return out


def he_check(depth, width, seeds, batch):
    """ReLU: slope of log2 Var[z_l] over layers (He et al.: −1 for Var[W] = 1/n, 0 for 2/n)."""
    out = {}
    for w_init in ("xavier", "he"):  # xavier on square layers is Var[W] = 1/n
        runs = [
            statistics_at_init(depth, width, "relu", w_init, batch=batch, seed=s)
            for s in range(seeds)
        ]
        slopes = [variance_slope(r) for r in runs]
        last = [r["z_var"][-1] / r["z_var"][0] for r in runs]
        out[w_init] = {
            "log2_var_slope_per_layer": float(np.mean(slopes)),
            "var_last_over_first": float(np.exp(np.mean(np.log(last)))),
            "predicted_var_last_over_first": 2.0 ** -(depth - 1) if w_init == "xavier" else 1.0,
        }
    out["depth"] = depth
    return out


# ----------------------------------------------------------------------------- part 2


@functools.cache
def _trainer(activation, depth, width, in_dim, batch):
    """Compiled (epoch, accuracy) for one architecture; every initialization reuses them."""
    model = jaxbp.serial(*mlp_layers(depth, width, 10, activation))
    state = tuple(() for _ in range(2 * depth + 1))
    step = jaxbp.models.loss_and_grad(model, jaxbp.losses.softmax_cross_entropy(), jit=False)

    @jax.jit
    def epoch(params, x_tr, y_tr, key, lr):
        n_steps = x_tr.shape[0] // batch
        order = jax.random.permutation(key, x_tr.shape[0])[: n_steps * batch]
        xs = x_tr[order].reshape(n_steps, batch, -1)
        ys = y_tr[order].reshape(n_steps, batch)

        def sgd_step(params, xy):
            value, grads, _ = step(params, state, *xy)  # the hand-written backward
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

        params, values = jax.lax.scan(sgd_step, params, (xs, ys))
        return params, values.mean()

    @jax.jit
    def accuracy(params, x, y):
        logits, _, _ = model.forward(params, state, x)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    return epoch, accuracy


def train_deep(activation, w_init, *, depth, width, epochs, lr, batch, seed, data):
    """SGD on digits; one compiled call runs a whole epoch of minibatch steps (lax.scan)."""
    in_dim = data["x_train"].shape[1]
    epoch, accuracy = _trainer(activation, depth, width, in_dim, batch)
    dense_params = init_params(jax.random.key(seed), depth, width, in_dim, 10, w_init)
    params = []
    for p in dense_params:
        params += [p, ()]  # (Dense, activation) pairs; the output Dense has no activation
    params = tuple(params[:-1])
    x_tr, y_tr = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    curve, keys = [], jax.random.split(jax.random.key(seed + 1), epochs)
    params = loop.loop(
        lambda p, k: epoch(p, x_tr, y_tr, k, lr),  # one compiled call: a whole epoch
        params,
        lambda step, count: keys[step],
        steps=epochs,
        callbacks=[lambda tick: curve.append(float(tick.out))],
    )
    test_acc = float(accuracy(params, jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])))
    return {"train_loss": curve, "test_accuracy": test_acc, "learned": test_acc >= 0.5}


def _final_loss(run):
    loss = run["train_loss"][-1]
    return loss if np.isfinite(loss) else np.inf


def plot_training(runs, path):
    fig, axes = common.new_figure(1, len(ACTIVATIONS), figsize=(11, 3.4), sharey=True)
    for ax, act in zip(axes, ACTIVATIONS, strict=True):
        for w_init in INITS:
            r = runs[f"{act}/{w_init}"]
            ax.plot(
                range(1, len(r["train_loss"]) + 1),
                r["train_loss"],
                label=f"{w_init}, lr {r['lr']:g} (test acc {r['test_accuracy']:.2f})",
            )
        ax.set_title(f"20-layer {act} MLP on digits")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss (cross-entropy)")
    return common.save_figure(fig, path)


# ----------------------------------------------------------------------------------- main


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.tiny:  # for the test suite: seconds
        cfg = dict(depths=[2, 3], width=32, seeds=1, batch=32, glorot_width=32, he_depth=4,
                   train_depth=3, train_width=16, epochs=2, lrs=[0.1],
                   input_stds=[1.0, 0.25])  # fmt: skip
    elif args.quick:
        cfg = dict(depths=[5, 10, 20], width=128, seeds=1, batch=128, glorot_width=1000,
                   he_depth=20, train_depth=20, train_width=64, epochs=8, lrs=[0.1],
                   input_stds=[1.0, 0.5])  # fmt: skip
    else:
        cfg = dict(depths=[5, 10, 20, 30, 40, 50], width=256, seeds=5, batch=256,
                   glorot_width=1000, he_depth=30, train_depth=20, train_width=128,
                   epochs=40, lrs=[0.01, 0.1], input_stds=[1.0, 0.5, 0.25])  # fmt: skip
    out = common.out_dir(args)

    maps = heat_maps(cfg["depths"], cfg["width"], cfg["seeds"], cfg["batch"])
    figures = []
    for key in maps:
        name = key.replace("/", "_")
        figures.append(str(plot_heat_map(maps, key, cfg["depths"], out / f"vanishing_{name}.png")))
    glorot = glorot_check(cfg["glorot_width"], cfg["seeds"], cfg["batch"], cfg["input_stds"])
    he = he_check(cfg["he_depth"], cfg["width"], cfg["seeds"], cfg["batch"])

    data = jaxbp_data.digits()
    runs = {}
    for act in ACTIVATIONS:
        for w_init in INITS:
            per_lr = {}
            for lr in cfg["lrs"]:
                per_lr[str(lr)] = r = train_deep(
                    act, w_init, depth=cfg["train_depth"], width=cfg["train_width"],
                    epochs=cfg["epochs"], lr=lr, batch=32, seed=args.seed, data=data,
                )  # fmt: skip
                print(
                    f"train {act:8s}{w_init:8s} lr {lr:<5} loss {r['train_loss'][0]:.3f} -> "
                    f"{r['train_loss'][-1]:.3f}  test acc {r['test_accuracy']:.3f}"
                )
            # the learning rate is chosen on the final training loss, never on the test set
            best = min(per_lr, key=lambda lr: _final_loss(per_lr[lr]))
            runs[f"{act}/{w_init}"] = {**per_lr[best], "lr": float(best), "per_lr": per_lr}
    figures.append(str(plot_training(runs, out / "vanishing_training.png")))

    print(f"Glorot check (5 tanh layers of {cfg['glorot_width']}): gradient ratio")
    for w_init in ("classic", "xavier"):
        g = glorot[w_init]
        print(
            f"  {w_init:8s} "
            + "  ".join(f"inputs std {s}: {v['mean']:.3f} ± {v['std']:.3f}" for s, v in g.items())
            + f"  (published ≈ {glorot['published'][w_init]})"
        )
    print(f"He check (ReLU, {cfg['he_depth']} layers): slope of log2 Var[z_l] per layer")
    for w_init in ("xavier", "he"):
        print(f"  {w_init:8s} {he[w_init]['log2_var_slope_per_layer']:+.3f}")
    print("gradient ratio std(δ_1)/std(δ_depth) at init:")
    for key, per_depth in maps.items():
        row = "  ".join(f"L={d}: {v['gradient_ratio']:.2e}" for d, v in per_depth.items())
        print(f"  {key:16s}{row}")

    result = {
        "experiment": "vanishing_gradients",
        "config": cfg,
        "machine": common.machine(),
        "quantity": {
            "delta_std": "std over batch and units of dL/dz_l (back-propagated gradient)",
            "dW_std": "std of dL/dW_l",
            "z_var": "variance of the pre-activation z_l",
            "gradient_ratio": "delta_std[layer 1] / delta_std[layer depth]",
        },
        "heat_maps": maps,
        "glorot_check": glorot,
        "he_check": he,
        "training": {
            "depth": cfg["train_depth"],
            "width": cfg["train_width"],
            "lrs": cfg["lrs"],
            "batch": 32,
            "runs": runs,
        },  # fmt: skip
        "figures": figures,
    }
    result["report"] = _report(glorot, he, figures, args)
    common.save_json(out / "vanishing_gradients.json", result)
    return result


def _report(glorot, he, figures, args):
    rows = []
    for w_init in ("classic", "xavier"):
        by_std = glorot[w_init]
        std = "0.5" if "0.5" in by_std else sorted(by_std)[-1]  # the README's inputs N(0, 0.5²)
        rows.append(common.headline(
            f"5 tanh layers, {w_init} init: std(δ₁)/std(δ₅), inputs N(0, {std}²)",
            by_std[std]["mean"], f"≈ {glorot['published'][w_init]} (Glorot & Bengio 2010)",
        ))  # fmt: skip
    for w_init, published in (("xavier", "−1, Var[W] = 1/n"), ("he", "0")):
        rows.append(common.headline(
            f"ReLU, {he['depth']} layers, {w_init}: slope of log₂ Var[z_l] per layer",
            he[w_init]["log2_var_slope_per_layer"], f"{published} (He et al. 2015)",
        ))  # fmt: skip
    return common.report(
        "Vanishing gradients at initialization",
        "python -m experiments.vanishing_gradients",
        rows,
        figures,
        notes=common.size_note(args, "depths to 50, 5 seeds, 40 epochs"),
    )


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
