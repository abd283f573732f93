"""The detection floor of `jaxbp.check`: the smallest error in a backward that the check catches,
per dtype.

A backward is made wrong on purpose: every gradient it returns (parameters and input) is
multiplied by 1 + ε, a relative error ε everywhere, for ε from 10⁻⁶ to 10⁻¹. Each wrong
backward is checked with the registry's rule — float64 against jax.vjp (≤ 1e-10), float32
against jax.vjp (≤ 1e-4), bfloat16 and float16 against the float64 truth (manual error ≤ 2 ×
jax.vjp's own error + 2 ulps) — op by op (no jit; the finite differences, whose float64
tolerance is 1e-6, catch nothing the jax.vjp comparison misses) on three layers (Dense,
MultiHeadAttention, LSTM) at several seeds. The floor of a (layer, dtype) is the smallest ε
caught at every seed. The tolerance rule predicts it: ε is caught once it exceeds the
tolerance, so bfloat16 (ulp 2⁻⁷, 2 ulps ≈ 1.6 %) lets a 1 % error pass.

Full size (the docs table, docs/checking.md):

    python -m experiments.detection_floor      # 5 seeds, ε at 10^(-6), 10^(-5.5), …, 10^(-1)

`--quick` (make demo): 2 seeds, ε at whole decades.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from jaxbp import check

DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16,
          "bfloat16": jnp.bfloat16}  # fmt: skip
LAYERS = {  # name -> (layer constructor, per-example input shape)
    "Dense": (lambda: jaxbp.Dense(8), (6,)),
    "MultiHeadAttention": (lambda: jaxbp.MultiHeadAttention(2), (5, 8)),
    "LSTM": (lambda: jaxbp.LSTM(6), (5, 4)),
}


def off_by(layer: jaxbp.Layer, eps: float) -> jaxbp.Layer:
    """`layer` whose backward returns every gradient times (1 + ε)."""

    def backward(params, residuals, dy):
        dparams, dx = layer.backward(params, residuals, dy)
        scale = lambda g: g * (1 + eps)  # noqa: E731 - in the gradient's own dtype
        return jax.tree.map(scale, dparams), jax.tree.map(scale, dx)

    return layer._replace(backward=backward, name=f"{layer.name} × (1 + {eps:.0e})")


def caught(layer, in_shape, dtype, eps, seed) -> bool:
    """Whether the check fails on the ε-wrong backward (jax.vjp, or the float64 truth in half
    precision; run op by op, so that the six ε share every compiled primitive)."""
    report = check.check_layer(
        off_by(layer, eps), in_shape, batch=4, seed=seed, dtype=dtype,
        finite_diff=False, raise_on_fail=False,
    )  # fmt: skip
    return not report.ok


def measure(errors, seeds, layers) -> dict:
    """{layer: {dtype: {"caught": [[bool per seed] per ε], "floor": smallest ε always caught}}}."""
    out = {}
    for name in layers:
        make, in_shape = LAYERS[name]
        layer = make()
        out[name] = {}
        for label, dtype in DTYPES.items():
            rows = [[caught(layer, in_shape, dtype, eps, s) for s in seeds] for eps in errors]
            # the floor: the smallest ε from which every larger ε is caught at every seed
            floor = next((e for i, e in enumerate(errors) if all(map(all, rows[i:]))), None)
            out[name][label] = {"caught": rows, "floor": floor}
            print(f"{name:<19} {label:<9} floor {floor if floor is None else f'{floor:.1e}'}")
    return out


def figure(errors, results, path):
    fig, axes = common.new_figure(1, len(results), figsize=(4.2 * len(results), 3.4), sharey=True)
    for ax, (name, per_dtype) in zip(np.atleast_1d(axes), results.items()):
        for label, r in per_dtype.items():
            ax.plot(errors, [np.mean(row) for row in r["caught"]], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("relative error ε injected")
        ax.set_title(name)
    np.atleast_1d(axes)[0].set_ylabel("fraction of seeds caught")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    common.save_figure(fig, path)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--layers", default=",".join(LAYERS), help="comma-separated")
    args = p.parse_args(argv)
    seeds = list(range(args.seed, args.seed + (args.seeds or (2 if args.quick else 5))))
    step = 1.0 if args.quick else 0.5
    errors = [float(f"{10**e:.3g}") for e in np.arange(-6, -1 + step / 2, step)]
    out = common.out_dir(args)
    results = measure(errors, seeds, args.layers.split(","))
    png = out / "detection_floor.png"
    figure(errors, results, png)
    table = {
        name: {label: r["floor"] for label, r in per_dtype.items()}
        for name, per_dtype in results.items()
    }
    one_percent = _index(errors, 1e-2)
    bf16_1pc_passes = not any(any(r["bfloat16"]["caught"][one_percent]) for r in results.values())
    headlines = [
        common.headline(f"smallest ε caught in {label} ({name})", floor, _rule(label))
        for name, per_dtype in table.items()
        for label, floor in per_dtype.items()
    ]
    headlines.append(
        common.headline(
            "a 1 % error in a bfloat16 backward passes",
            bf16_1pc_passes,
            "2 ulps of bfloat16 ≈ 1.6 %",
        )
    )
    summary = {
        "errors": errors,
        "seeds": seeds,
        "table": table,
        "results": results,
        "report": common.report(
            "Detection floor of the gradient check",
            "python -m experiments.detection_floor",
            headlines,
            [png],
            notes=common.size_note(args, "5 seeds, half-decade steps of ε"),
        ),
    }
    common.save_json(out / "detection_floor.json", summary)
    return summary


def _rule(label: str) -> str:
    """The tolerance the floor follows from."""
    if label == "float64":
        return f"rtol {check.VJP_RTOL:g} vs jax.vjp"
    if label == "float32":
        return f"rtol {check.F32_RTOL:g} vs jax.vjp"
    eps = float(jnp.finfo(DTYPES[label]).eps)
    return f"2 × jax.vjp's error + {check.HALF_ULPS} ulps ({check.HALF_ULPS * eps:.1e})"


def _index(errors, value):
    return int(np.argmin(np.abs(np.log10(errors) - np.log10(value))))


if __name__ == "__main__":
    main()
