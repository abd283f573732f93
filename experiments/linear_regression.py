"""The article's linear-regression example, run as written and then done right.

The article's data: np.random.seed(0), X = linspace(−1, 1, 100), Y = 2X + N(0, 1) noise; its
learning rate 0.01 and 1000 iterations. Its code fails three ways:

1. shapes: X is (100,) and W is (1, 2), so `np.dot(X, W)` raises before anything is learned;
2. it multiplies by `sigmoid_derivative(Y_hat)` although the model has no sigmoid (the output
   is linear, f(z) = z, f′ = 1), and that "derivative" x(1 − x) expects σ(z), not z;
3. the error term ŷ − y is missing, so the gradient never sees Y: nothing can fit the data.

Here: the article's code is run (and its shape error recorded), then the same code with the
shapes mended but the other two mistakes kept, then the correct gradient descent — a
`jaxbp.Dense(1)` trained with `half_mse` through the hand-written backward — against the
closed-form least-squares answer.

    python -m experiments.linear_regression [--quick]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from jaxbp import losses


def article_data():
    np.random.seed(0)
    X = np.linspace(-1, 1, 100)
    Y = 2 * X + np.random.randn(100)
    return X, Y


def run_article_code_verbatim(X, Y):
    """The article's gradient step, line for line; returns the error it raises (or None)."""
    W = np.random.randn(1, 2)
    b = np.random.randn(1, 1)

    def forward(X, W, b):
        return np.dot(X, W) + b

    def sigmoid_derivative(x):
        return x * (1 - x)

    try:
        Y_hat = forward(X, W, b)
        dY_hat = sigmoid_derivative(Y_hat)
        np.dot(X.T, dY_hat)
    except ValueError as e:
        return f"{type(e).__name__}: {e}"
    return None


def run_article_with_shapes_mended(X, Y, alpha=0.01, iterations=1000):
    """Shapes fixed (X (100, 1), W (1, 1)); the sigmoid derivative and the missing error term
    kept. Returns w, b, and the MSE trajectory."""
    rng = np.random.default_rng(0)
    Xc, Yc = X[:, None], Y[:, None]
    W, b = rng.normal(size=(1, 1)), rng.normal(size=(1, 1))
    history = []
    for _ in range(iterations):
        Y_hat = Xc @ W + b
        dY_hat = Y_hat * (1 - Y_hat)  # the article's sigmoid_derivative of a linear output
        dW, db = Xc.T @ dY_hat, dY_hat.sum(axis=0)  # no (ŷ − y) anywhere: Y is never used
        W, b = W - alpha * dW, b - alpha * db
        history.append(float(np.mean((Yc - (Xc @ W + b)) ** 2)))
        if not np.isfinite(history[-1]):
            break
    return float(W[0, 0]), float(b[0, 0]), history


def least_squares(X, Y):
    A = np.stack([X, np.ones_like(X)], axis=1)
    (w, b), *_ = np.linalg.lstsq(A, Y, rcond=None)
    return float(w), float(b)


def gradient_descent(X, Y, alpha, iterations, seed=0):
    """Full-batch gradient descent on half_mse with the manual backward (float64).

    Returns the (w, b) trajectory after every iteration, and the losses.
    """
    model = jaxbp.Dense(1)
    loss = losses.half_mse()
    _, _, state = model.init(jax.random.key(seed), (1,))
    params = {"W": jnp.array([[np.random.default_rng(seed).normal()]]), "b": jnp.zeros(1)}
    x, y = jnp.asarray(X)[:, None], jnp.asarray(Y)[:, None]
    step = jaxbp.models.loss_and_grad(model, loss, jit=False)

    def body(p, _):
        value, g, _ = step(p, state, x, y)
        p = jax.tree.map(lambda w, d: w - alpha * d, p, g)  # W ← W − α ∂L/∂W
        return p, (p["W"][0, 0], p["b"][0], value)

    _, (ws, bs, values) = jax.jit(lambda p: jax.lax.scan(body, p, None, length=iterations))(params)
    return np.asarray(ws), np.asarray(bs), np.asarray(values)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=1000)
    args = p.parse_args(argv)
    out = common.out_dir(args)

    with jax.enable_x64(True):
        X, Y = article_data()
        verbatim_error = run_article_code_verbatim(X, Y)
        bad_w, bad_b, bad_history = run_article_with_shapes_mended(
            X, Y, args.alpha, args.iterations
        )
        w_ls, b_ls = least_squares(X, Y)
        horizon = max(20 * args.iterations, 20000)
        ws, bs, values = gradient_descent(X, Y, args.alpha, horizon)
        dist = np.maximum(np.abs(ws - w_ls), np.abs(bs - b_ls))
        reached = np.nonzero(dist <= 1e-4)[0]
        iterations_to_1e4 = int(reached[0]) + 1 if reached.size else None
        k = args.iterations - 1
        mse_ls = float(np.mean((Y - (w_ls * X + b_ls)) ** 2))

    result = {
        "data": "np.random.seed(0); X = linspace(-1, 1, 100); Y = 2X + randn(100)",
        "alpha": args.alpha,
        "iterations": args.iterations,
        "article_code_verbatim": verbatim_error,
        "article_shapes_mended": {
            "w": bad_w,
            "b": bad_b,
            "mse": bad_history[-1],
            "note": "sigmoid derivative of a linear output, no error term: Y is never used",
        },
        "least_squares": {"w": w_ls, "b": b_ls, "mse": mse_ls},
        "gradient_descent": {
            "w": float(ws[k]),
            "b": float(bs[k]),
            "mse": float(2 * values[k]),
            "distance_to_least_squares": float(dist[k]),
        },
        "iterations_to_reach_least_squares_within_1e-4": iterations_to_1e4,
    }
    result["report"] = common.report(
        "Linear regression, the article's data",
        "python -m experiments.linear_regression",
        [
            common.headline("article's code as written", verbatim_error, "a shape error (README)",
                            ok=bool(verbatim_error)),
            common.headline("article's gradient, shapes mended: w", bad_w,
                            "0.00: Y is never used (README)"),
            common.headline(f"manual backprop, {args.iterations} iterations: distance to least "
                            "squares", float(dist[k]),
                            f"least squares w = {w_ls:.4f}, b = {b_ls:.4f}"),
            common.headline("iterations to least squares within 1e-4", iterations_to_1e4,
                            "2864 at α = 0.01 (README); target: reached",
                            ok=iterations_to_1e4 is not None),
        ],
        ["linear_regression.png"],
        notes=f"α = {args.alpha}; gradient descent run for {horizon} iterations to find when it "
        "reaches the least-squares solution.",
    )  # fmt: skip
    common.save_json(out / "linear_regression.json", result)

    fig, (ax1, ax2) = common.new_figure(1, 2, figsize=(11, 4))
    ax1.scatter(X, Y, s=10, color="0.6", label="data (Y = 2X + noise)")
    grid = np.array([-1.0, 1.0])
    ax1.plot(grid, w_ls * grid + b_ls, "k-", label=f"least squares w={w_ls:.3f} b={b_ls:.3f}")
    ax1.plot(
        grid,
        ws[k] * grid + bs[k],
        "C0--",
        label=f"manual backprop, {args.iterations} it: w={ws[k]:.3f} b={bs[k]:.3f}",
    )
    ax1.plot(
        grid, bad_w * grid + bad_b, "C3:", label=f"article's gradient: w={bad_w:.2f} b={bad_b:.2f}"
    )
    ax1.legend(fontsize=8)
    ax1.set_title("Linear regression, the article's data")
    ax2.semilogy(np.arange(1, horizon + 1), dist, "C0")
    ax2.axhline(1e-4, color="k", lw=0.8, ls=":")
    ax2.axvline(
        args.iterations, color="0.5", lw=0.8, ls="--", label=f"{args.iterations} iterations"
    )
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("max(|w − w*|, |b − b*|)")
    ax2.set_title(f"Gradient descent, α = {args.alpha}")
    ax2.legend(fontsize=8)
    common.save_figure(fig, out / "linear_regression.png")

    print(f"article's code as written: {verbatim_error}")
    print(
        f"article's gradient (shapes mended): w={bad_w:.4f} b={bad_b:.4f} mse={bad_history[-1]:.4f}"
    )
    print(f"least squares:                      w={w_ls:.6f} b={b_ls:.6f} mse={mse_ls:.4f}")
    print(
        f"manual backprop, {args.iterations} iterations:  w={ws[k]:.6f} b={bs[k]:.6f} "
        f"(distance {dist[k]:.2e})"
    )
    print(f"iterations to reach least squares within 1e-4: {iterations_to_1e4}")
    return result


if __name__ == "__main__":
    main()
