"""Every ratio benchmark in one command: the hand-written backward against autodiff.

    python -m experiments.bench [--quick] [--only NAME ...] [--baseline PATH]
    make bench

Workloads (float32, each in this one process, its methods timed in interleaved rounds by
`experiments.timing`; ratio = median over rounds of t_manual / t_autodiff, so < 1 means the
manual backward is faster):

* dense — a ReLU MLP with a softmax cross-entropy: `loss_and_grad` vs `jax.value_and_grad`;
* conv — the 2-D CNN of `bench_cnn` (three convolutions, global average pooling);
* recurrent — LSTM and GRU (`bench_rnn`'s model, loss on every step);
* attention — causal attention, the library's default form, value + (dQ, dK, dV) of ⟨G, O⟩,
  vs autodiff of the plain formula softmax(QKᵀ/√d + mask) V, at several T;
* gpt — one value + grad of a GPT's token cross-entropy;
* recompute — a residual tanh MLP: `remat_sequence(..., schedule=sqrt_n())` and `revolve(8)`
  against the `jax.checkpoint` placement of `experiments.memory` with the smallest memory (of
  those on the same parameter pytree: its `lax.scan` form, on stacked weights, is left out), as
  SGD steps that donate their parameters;
* train — `fit` against a bare Python loop over the jitted train step (same model, steps,
  batch size): the cost of the loop, not of the gradient.

Memory is the compiler's: temp + output − aliased bytes of `.lower(...).compile()
.memory_analysis()` (what a call allocates beyond its arguments). Before timing, every method's
gradient is compared with the reference's (`grad_rel_diff`: max |Δ| / max |reference| per leaf).

Writes results/bench.json (every ratio, flat under "ratios"), results/bench.png (the ratios,
with the baseline's) and results/bench.md (the table). It compares with `--baseline` (default
docs/bench_results/bench.json, the committed idle run) and lists under "moved" every ratio
that changed by more than 10 % (|now / before − 1| > 0.1); `--update-baseline` writes the new
result there.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import bench_attention, bench_cnn, bench_rnn, common, memory, timing
from jaxbp import losses, optim, recompute
from jaxbp.layers import attention

BASELINE = Path("docs/bench_results/bench.json")
MOVED = 0.10  # a ratio "moved" when |now / before - 1| exceeds this

# Per size: timing rounds, seconds per measurement, and each workload's shapes:
#   dense (batch, inputs, hidden widths)   conv (batch, side, model)
#   rnn (T, batch, hidden, features, cells)   attention (B, heads, head width, [T])
#   gpt (batch, T, width, depth, heads)   recompute ([depths], width, batch)
#   train (batch, hidden, steps per timed loop)
SIZES = {
    "tiny": dict(
        rounds=1, min_time=0.0, dense=(8, 12, [16, 16]), conv=(2, 8, "small"),
        rnn=(4, 2, 8, 3, ["LSTM"]), attention=(1, 1, 8, [16]), gpt=(2, 8, 16, 1, 2),
        recompute=([4], 8, 4), train=(8, 8, 5),
    ),
    "quick": dict(
        rounds=5, min_time=0.05, dense=(128, 64, [256, 256]), conv=(32, 32, "cnn2d"),
        rnn=(50, 32, 128, 64, ["LSTM", "GRU"]), attention=(4, 4, 32, [128, 512]),
        gpt=(8, 64, 128, 4, 4), recompute=([32], 256, 64), train=(32, 64, 200),
    ),
    "full": dict(
        rounds=9, min_time=0.1, dense=(512, 784, [1024, 1024]), conv=(128, 32, "cnn2d"),
        rnn=(100, 32, 128, 64, ["LSTM", "GRU"]), attention=(4, 4, 32, [128, 256, 512, 1024, 2048]),
        gpt=(8, 256, 128, 4, 4), recompute=([64, 256], 512, 128), train=(32, 64, 2000),
    ),
}  # fmt: skip


class Method(NamedTuple):
    call: Any  # zero-argument function, the thing timed
    bytes: int | None  # compiled temp + output - alias bytes (None: not one program)
    grads: Any  # the gradient pytree, for the same-numbers check (None: not comparable)


def compiled_bytes(binary) -> int:
    m = binary.memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)


def jitted(fn, *args) -> Method:
    """`fn(*args) -> (value, grads)` compiled once: timed as is, memory read from the binary."""
    binary = jax.jit(fn).lower(*args).compile()
    return Method(lambda: binary(*args), compiled_bytes(binary), binary(*args)[1])


def rel_diff(grads, reference) -> float:
    """max over leaves of max|a − b| / max|b| (in NumPy: no eager op compiled per shape)."""
    leaves = zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True)
    pairs = [(np.asarray(a).astype(float), np.asarray(b).astype(float)) for a, b in leaves]
    return max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) for a, b in pairs)


def measure(label, methods: dict, reference: str, cfg) -> dict:
    """Time `methods` (name -> Method) interleaved; every ratio is against `reference`."""
    times = timing.interleaved_times(
        {n: m.call for n, m in methods.items()}, rounds=cfg["rounds"], min_time=cfg["min_time"]
    )
    ref = methods[reference]
    row = {"label": label, "reference": reference, "ms": {}, "MiB": {}, "grad_rel_diff": {},
           "ratios": {}}  # fmt: skip
    for name, m in methods.items():
        row["ms"][name] = 1e3 * times.medians[name]
        row["MiB"][name] = None if m.bytes is None else m.bytes / 2**20
        if m.grads is not None and name != reference:
            row["grad_rel_diff"][name] = rel_diff(m.grads, ref.grads)
        if name != reference:
            row["ratios"][f"time {name} / {reference}"] = timing.ratio(times, name, reference)
            if m.bytes is not None:
                row["ratios"][f"memory {name} / {reference}"] = m.bytes / ref.bytes
    return row


def model_row(label, model, loss, in_shape, x, y, cfg, seed=0):
    """loss_and_grad (the manual backward) vs jax.value_and_grad of the same forward."""
    params, state = init(model, in_shape, seed)
    manual, autodiff = bench_rnn.gradient_functions(model, loss, state)
    methods = {"manual": jitted(manual, params, x, y), "autodiff": jitted(autodiff, params, x, y)}
    return measure(label, methods, "autodiff", cfg)


def init(model, in_shape, seed=0):
    """(params, state) of `model.init`, in one compiled call (eagerly, every parameter's random
    draw would compile on its own)."""
    key = jax.random.key(seed, impl="unsafe_rbg")  # compiles faster than threefry on XLA:CPU
    return jax.jit(lambda key: model.init(key, in_shape)[1:])(key)


def _normal(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _labels(batch):
    return np.arange(batch) % 10


# ------------------------------------------------------------------------------ workloads


def dense(cfg):
    batch, fan_in, widths = cfg["dense"]
    layers = [layer for w in widths for layer in (jaxbp.Dense(w), jaxbp.Relu())]
    model = jaxbp.serial(*layers, jaxbp.Dense(10))
    x, y = _normal((batch, fan_in)), _labels(batch)
    label = f"dense {fan_in}-{'-'.join(map(str, widths))}-10, batch {batch}"
    return [model_row(label, model, losses.softmax_cross_entropy(), (fan_in,), x, y, cfg)]


def small_cnn():
    """One convolution: the tiny size's stand-in for `bench_cnn.cnn2d` (same code path)."""
    return jaxbp.serial(jaxbp.Conv2D(4, 3, padding="SAME"), jaxbp.Relu(), jaxbp.GlobalAvgPool(),
                        jaxbp.Dense(10))  # fmt: skip


def conv(cfg):
    batch, side, which = cfg["conv"]
    model = bench_cnn.cnn2d() if which == "cnn2d" else small_cnn()
    x, y = _normal((batch, side, side, 3)), _labels(batch)
    label = f"conv {which}, {side}×{side}×3, batch {batch}"
    loss = losses.softmax_cross_entropy()
    return [model_row(label, model, loss, (side, side, 3), x, y, cfg)]


def recurrent(cfg):
    T, batch, hidden, features, cells = cfg["rnn"]
    x, y = _normal((batch, T, features)), _normal((batch, T, 1), seed=2)
    return [
        model_row(f"recurrent {cell}, T {T}, batch {batch}, hidden {hidden}",
                  bench_rnn.build(cell, hidden), losses.mse(), (T, features), x, y, cfg)
        for cell in cells
    ]  # fmt: skip


def attention_rows(cfg):
    batch, heads, head_dim, Ts = cfg["attention"]

    def manual(q, k, v, G):  # the library's default form (block_size not given)
        o, res = attention.attention_forward(q, k, v, causal=True)
        return jnp.vdot(G, o), attention.attention_backward(res, G, causal=True)

    autodiff = jax.value_and_grad(
        lambda q, k, v, G: jnp.vdot(G, bench_attention.plain_attention(q, k, v)),
        argnums=(0, 1, 2),
    )
    rows = []
    for T in Ts:
        q, k, v, G = (_normal((batch, heads, T, head_dim), seed=s) for s in range(4))
        methods = {"manual": jitted(manual, q, k, v, G), "autodiff": jitted(autodiff, q, k, v, G)}
        label = f"attention causal, T {T}, B {batch}, {heads} heads × {head_dim}"
        rows.append(measure(label, methods, "autodiff", cfg))
    return rows


def gpt(cfg):
    batch, T, features, depth, heads = cfg["gpt"]
    vocab = 96
    model = jaxbp.GPT(vocab, features=features, depth=depth, heads=heads, max_len=T)
    ids = np.random.default_rng(1).integers(0, vocab, (batch, T + 1))
    label = f"gpt step, vocab {vocab}, width {features}, depth {depth}, T {T}, batch {batch}"
    loss = jaxbp.losses.token_cross_entropy()
    return [model_row(label, model, loss, (T,), ids[:, :-1], ids[:, 1:], cfg)]


def donated(fn, params, x, options=None) -> Method:
    """`experiments.memory`'s SGD step around `fn(params, x) -> (loss, grads)`, compiled with
    the params donated (so the gradients are temporaries), fed its own new params each call."""
    binary = memory.compiled(fn, params, x, options)
    call = timing.carried(lambda p, x: binary(p, x)[::-1], params, x)
    return Method(call, compiled_bytes(binary), None)


def with_grads(method: Method, fn, params, x) -> Method:
    """`method` with the gradient of `fn` (one more compilation), for the same-numbers check."""
    return method._replace(grads=jax.jit(fn)(params, x)[1])


def recompute_rows(cfg):
    """√n and revolve(8) recompute vs the jax.checkpoint placement of least memory."""
    depths, width, batch = cfg["recompute"]
    rows = []
    for n in depths:
        blocks = [memory.block(width) for _ in range(n)]
        params, state = init(jaxbp.serial(*blocks), (width,))
        x = _normal((batch, width))
        placements = {}  # name -> (value-and-grad fn, its donated SGD step)
        autodiff = memory.autodiff_steps(blocks, state, n, width)
        for name, (fn, options, transform) in autodiff.items():
            if name.startswith("jax.checkpoint") and transform is None:  # same params pytree
                placements[name] = (fn, donated(fn, params, x, options))
        best = min(placements, key=lambda name: placements[name][1].bytes)
        fn, method = placements[best]
        methods = {"best jax.checkpoint": with_grads(method, fn, params, x)}
        for name, schedule in (("√n", recompute.sqrt_n()), ("revolve(8)", recompute.revolve(8))):
            step = memory.manual_step(jaxbp.remat_sequence(*blocks, schedule=schedule), state)
            methods[name] = with_grads(donated(step, params, x), step, params, x)
        label = f"recompute residual tanh MLP, depth {n}, width {width}, batch {batch}"
        row = measure(label, methods, "best jax.checkpoint", cfg)
        rows.append({**row, "best_jax_checkpoint": best})
    return rows


def train_loop(cfg):
    """fit (minibatches drawn on the device, its bookkeeping) vs a bare loop of the jitted step."""
    batch, hidden, steps = cfg["train"]
    digits = jaxbp.data.digits()
    x, y = digits["x_train"], digits["y_train"]
    model = jaxbp.serial(jaxbp.Dense(hidden), jaxbp.Relu(), jaxbp.Dense(10))
    loss, opt, key = losses.softmax_cross_entropy(), optim.adam(1e-3), jax.random.key(0)
    idx = np.random.default_rng(0).integers(0, len(x), size=(steps, batch))
    batches = [(jnp.asarray(x[i]), jnp.asarray(y[i])) for i in idx]
    step = jaxbp.make_train_step(model, loss, opt)

    def bare():
        state = jaxbp.train.init_train_state(model, opt, key, (x.shape[1],), dtype=np.float32)
        for xb, yb in batches:
            state, value = step(state, xb, yb)
        return state, value

    def fit():
        precision = jaxbp.train.Precision(dtype=np.float32)
        kw = dict(key=key, steps=steps, batch_size=batch, progress=False, precision=precision)
        return jaxbp.fit(model, loss, opt, (x, y), **kw).train_state

    methods = {"fit": Method(fit, None, None), "bare loop": Method(bare, None, None)}
    label = f"train loop, digits MLP 64-{hidden}-10, batch {batch}, {steps} steps"
    return [measure(label, methods, "bare loop", cfg)]


WORKLOADS = {
    "dense": dense,
    "conv": conv,
    "recurrent": recurrent,
    "attention": attention_rows,
    "gpt": gpt,
    "recompute": recompute_rows,
    "train": train_loop,
}


# ----------------------------------------------------------------- run, compare, write


def run(names, size: str) -> dict:
    """Run the named workloads at `size` ("tiny", "quick", "full"): {name: {rows, seconds}}."""
    cfg, out = SIZES[size], {}
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        rows = WORKLOADS[name](cfg)
        out[name] = {"rows": rows, "seconds": time.perf_counter() - t0,
                     "cpu_seconds": time.process_time() - c0}  # fmt: skip
        for row in rows:
            ratios = "  ".join(f"{k} {v:.3f}" for k, v in row["ratios"].items())
            print(f"{row['label']}: {ratios}", flush=True)
    return out


def flat_ratios(workloads: dict) -> dict:
    """'<row label>: <ratio name>' -> value, over every workload's rows."""
    return {f"{r['label']}: {k}": v for w in workloads.values() for r in w["rows"]
            for k, v in r["ratios"].items()}  # fmt: skip


def compare(ratios: dict, baseline: dict | None, threshold: float = MOVED) -> list[dict]:
    """Every ratio present in both whose value moved by more than `threshold` (relative)."""
    if not baseline:
        return []
    before = baseline.get("ratios", {})
    moved = []
    for key, now in ratios.items():
        old = before.get(key)
        if old is None or now is None or not old or math.isnan(old) or math.isnan(now):
            continue
        change = now / old - 1
        if abs(change) > threshold:
            moved.append({"ratio": key, "before": old, "now": now, "change": change})
    return moved


def load_baseline(path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def markdown(result) -> str:
    """The page: every ratio, its baseline and its change; the moved ones flagged."""
    before = (result["baseline"] or {}).get("ratios", {})
    moved = {m["ratio"] for m in result["moved"]}
    lines = [
        "# jaxbp benchmarks: manual backward / autodiff",
        "",
        f"Size `{result['size']}`, {result['machine']['backend']} "
        f"({', '.join(result['machine']['devices'])}), {result['machine']['date']}. "
        f"Baseline: `{result['baseline_path']}`"
        + ("" if result["baseline"] else " (none found)")
        + f". Flagged: moved by more than {MOVED:.0%}.",
        "",
        "| ratio | now | baseline | change | |",
        "|---|---:|---:|---:|---|",
    ]
    for key, now in result["ratios"].items():
        old = before.get(key)
        change = "" if old is None else f"{now / old - 1:+.1%}"
        old = "" if old is None else f"{old:.3f}"
        lines.append(f"| {key} | {now:.3f} | {old} | {change} | {'**moved**' * (key in moved)} |")
    return "\n".join(lines) + "\n"


def plot(result, path):
    ratios = result["ratios"]
    before = (result["baseline"] or {}).get("ratios", {})
    keys = list(ratios)
    fig, ax = common.new_figure(figsize=(12, 0.28 * len(keys) + 1.5))
    ypos = np.arange(len(keys))
    ax.barh(ypos, [ratios[k] for k in keys], color="tab:blue", label="now")
    old = [(i, before[k]) for i, k in enumerate(keys) if k in before]
    if old:
        ax.plot([v for _, v in old], [i for i, _ in old], "k|", ms=12, mew=2, label="baseline")
    ax.axvline(1.0, color="gray", lw=1)
    ax.set_yticks(ypos, keys, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (< 1: manual is faster / smaller)")
    ax.set_title(f"jaxbp: manual backward / autodiff, size {result['size']}")
    ax.legend(fontsize=8)
    return common.save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--baseline", default=str(BASELINE), help="the previous bench.json")
    p.add_argument("--update-baseline", action="store_true", help="write the result there")
    p.add_argument("--tiny", action="store_true", help="the test suite's size")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = common.out_dir(args)
    t0 = time.perf_counter()
    workloads = run(args.only, size)
    ratios = flat_ratios(workloads)
    baseline = load_baseline(args.baseline)
    result = {
        "size": size,
        "config": SIZES[size],
        "workloads": workloads,
        "ratios": ratios,
        "baseline_path": args.baseline,
        "baseline": {"size": baseline["size"], "machine": baseline["machine"],
                     "ratios": baseline["ratios"]} if baseline else None,
        "moved": compare(ratios, baseline),
        "machine": common.machine(),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    print(f"{len(result['moved'])} ratios moved by more than {MOVED:.0%} against {args.baseline}"
          + ("" if baseline else " (no baseline found)") + ":")  # fmt: skip
    for m in result["moved"]:
        print(f"  {m['ratio']}: {m['before']:.3f} -> {m['now']:.3f} ({m['change']:+.1%})")
    result["report"] = _report(result, args)
    plot(result, out / "bench.png")
    (out / "bench.md").write_text(markdown(result))
    common.save_json(out / "bench.json", result)
    if args.update_baseline:
        Path(args.baseline).parent.mkdir(parents=True, exist_ok=True)
        common.save_json(Path(args.baseline), {k: v for k, v in result.items() if k != "baseline"})
    return result


def _report(result, args):
    lines = [
        common.headline(key, value, "≤ 1.0 (never slower, never larger)", ok=value <= 1.0)
        for key, value in result["ratios"].items()
        if "train loop" not in key
    ]
    lines += [
        common.headline(key, value, "fit's loop overhead (no target)")
        for key, value in result["ratios"].items()
        if "train loop" in key
    ]
    moved = ", ".join(m["ratio"] for m in result["moved"]) or "none"
    return common.report(
        "All ratio benchmarks: manual backward / autodiff",
        "python -m experiments.bench",
        lines,
        ["bench.png"],
        status="ok" if result["baseline"] else "partial",
        notes=common.size_note(args, "make bench")
        + f"; medians of interleaved rounds; moved > {MOVED:.0%} vs the baseline: {moved}"
        + ("" if result["baseline"] else " (no baseline committed yet)"),
    )


if __name__ == "__main__":
    main()
