"""Attention and one GPT training step: hand-written backward against autodiff, time and memory.

    python -m experiments.bench_attention [--quick]

Attention (float32, B = 4, 4 heads of width 32, causal, T ∈ {128, …, 2048}): value and
gradient (dQ, dK, dV) of ⟨G, O⟩ for a fixed random G, by four methods in one process from the
same inputs: the manual whole-matrix form, the manual blocked form (`block_size`, default
128), `jax.value_and_grad` of the plain formula softmax(QKᵀ/√d + mask) V, and of
`jax.nn.dot_product_attention` (fed its own (B, T, H, d) layout). Times are medians of runs
interleaved across the methods, so machine load hits all alike; memory is the compiled
temporary memory (`.lower(...).compile().memory_analysis().temp_size_in_bytes`). The fitted
exponent is the slope of log(memory) against log(T). GPT step: one value+grad of the token
cross-entropy of a GPT (vocab 96, dim 128, 4 layers, 4 heads, T = 256, B = 8), manual (whole
and blocked attention) against `jax.value_and_grad` of the same forward.

Targets from the issue: blocked memory exponent ≤ 1.1 and ≤ 0.25× autodiff's at T = 1024;
whole-matrix manual time ≤ 1.0× autodiff's at every T; GPT step ≤ 1.0× time, ≤ 0.7× memory.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from experiments.bench_rnn import interleaved_medians
from jaxbp.layers import attention


def plain_attention(q, k, v):
    """The formula as autodiff sees it: softmax of the causally masked scores, times V."""
    T, d = q.shape[-2:]
    S = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    S = jnp.where(jnp.tril(jnp.ones((T, T), bool)), S, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(S, axis=-1), v)


def attention_methods(block):
    """name -> fn(q, k, v, G) -> (⟨G, O⟩, (dQ, dK, dV)); the jax.nn one takes (B, T, H, d)."""

    def manual(block_size):
        def fn(q, k, v, G):
            o, res = attention.attention_forward(q, k, v, causal=True, block_size=block_size)
            grads = attention.attention_backward(res, G, causal=True, block_size=block_size)
            return jnp.vdot(G, o), grads

        return fn

    def autodiff(f):
        return jax.value_and_grad(lambda q, k, v, G: jnp.vdot(G, f(q, k, v)), argnums=(0, 1, 2))

    return {
        "manual whole": manual(None),
        "manual blocked": manual(block),
        "autodiff plain": autodiff(plain_attention),
        "autodiff jax.nn": autodiff(
            lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
        ),
    }


def bench_attention(T, batch, heads, head_dim, block, repeat, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v, G = (jax.random.normal(kk, (batch, heads, T, head_dim)) for kk in keys)
    bthd = tuple(jnp.swapaxes(a, 1, 2) for a in (q, k, v, G))  # jax.nn's layout
    methods = attention_methods(block)
    args = {name: bthd if "jax.nn" in name else (q, k, v, G) for name in methods}
    fns = {name: compiled(fn, *args[name]) for name, fn in methods.items()}
    ref = fns["autodiff plain"](*args["autodiff plain"])[1]
    row = {"T": T, "grad_rel_err": {}, "time_ms": {}, "temp_MiB": {}}
    for name, fn in fns.items():
        grads = fn(*args[name])[1]
        if "jax.nn" in name:
            grads = tuple(jnp.swapaxes(g, 1, 2) for g in grads)
        row["grad_rel_err"][name] = max(
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(grads, ref)
        )
        row["temp_MiB"][name] = temp_mib(fns[name])
    times = _interleaved(fns, args, repeat)
    row["time_ms"] = {name: 1e3 * t for name, t in times.items()}
    return row


def compiled(fn, *args):
    """`fn` compiled once for `args`: timed as is, and its memory read from the same binary."""
    return jax.jit(fn).lower(*args).compile()


def temp_mib(binary) -> float:
    return binary.memory_analysis().temp_size_in_bytes / 2**20


def _interleaved(fns, args, repeat):
    """Medians of interleaved runs of functions that take different arguments."""
    names = list(fns)
    calls = [(lambda n=n: fns[n](*args[n])) for n in names]
    return dict(zip(names, interleaved_medians(calls, (), repeat)))


def bench_gpt_step(T, batch, block, repeat, seed=0, vocab=96, dim=128, layers=4, heads=4):
    """One value+grad of the token loss: manual (whole, blocked) vs jax.value_and_grad."""
    loss = jaxbp.losses.token_cross_entropy()
    ids = jax.random.randint(jax.random.key(seed + 1), (batch, T + 1), 0, vocab)
    x, y = ids[:, :-1], ids[:, 1:]
    models = {
        name: jaxbp.GPT(
            vocab, features=dim, depth=layers, heads=heads, max_len=T, block_size=block_size
        )
        for name, block_size in (("manual whole", None), ("manual blocked", block))
    }
    _, params, state = models["manual whole"].init(jax.random.key(seed), (T,))  # shared
    raw = {}
    for name, model in models.items():
        step = jaxbp.models.grad.loss_and_grad(model, loss, jit=False)
        raw[name] = lambda p, x, y, step=step: step(p, state, x, y)[:2]

    def value(p, x, y):  # autodiff of the plain (whole-matrix) forward
        return loss.forward(models["manual whole"].forward(p, state, x, train=True)[0], y)[0]

    raw["autodiff"] = jax.value_and_grad(value)
    fns = {name: compiled(fn, params, x, y) for name, fn in raw.items()}
    ref = fns["autodiff"](params, x, y)[1]
    row = {"T": T, "batch": batch, "grad_rel_err": {}, "temp_MiB": {}}
    for name, fn in fns.items():
        grads = fn(params, x, y)[1]
        row["grad_rel_err"][name] = max(
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref))
        )
        row["temp_MiB"][name] = temp_mib(fn)
    times = interleaved_medians(list(fns.values()), (params, x, y), repeat)
    row["time_ms"] = {name: 1e3 * t for name, t in zip(fns, times)}
    row["params"] = sum(int(a.size) for a in jax.tree.leaves(params))
    return row


def fitted_exponent(Ts, values) -> float:
    """Slope of log(value) against log(T), least squares."""
    return float(np.polyfit(np.log(Ts), np.log(values), 1)[0])


def plot(rows, path):
    fig, axes = common.new_figure(1, 2, figsize=(10, 4))
    Ts = [r["T"] for r in rows]
    for name in rows[0]["time_ms"]:
        axes[0].plot(Ts, [r["time_ms"][name] for r in rows], "o-", label=name)
        axes[1].plot(Ts, [r["temp_MiB"][name] for r in rows], "o-", label=name)
    for ax, label in zip(axes, ("value+grad time (ms, median)", "compiled temporary memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("causal attention, float32, B=4, 4 heads × 32: manual backward vs autodiff")
    return common.save_figure(fig, path)


def summarize(rows, gpt, block):
    """Ratios against the plain autodiff, the fitted exponents, and the report headline."""
    Ts = [r["T"] for r in rows]
    mem = {name: [r["temp_MiB"][name] for r in rows] for name in rows[0]["temp_MiB"]}
    exponents = {name: fitted_exponent(Ts, m) for name, m in mem.items()}
    for r in rows:
        auto_t, auto_m = r["time_ms"]["autodiff plain"], r["temp_MiB"]["autodiff plain"]
        r["time_ratio"] = {n: t / auto_t for n, t in r["time_ms"].items()}
        r["memory_ratio"] = {n: m / auto_m for n, m in r["temp_MiB"].items()}
    at_1024 = [r for r in rows if r["T"] == 1024]
    mem_1024 = at_1024[0]["memory_ratio"]["manual blocked"] if at_1024 else None
    whole_time = max(r["time_ratio"]["manual whole"] for r in rows)
    gpt_time = {n: gpt["time_ms"][n] / gpt["time_ms"]["autodiff"] for n in gpt["time_ms"]}
    gpt_mem = {n: gpt["temp_MiB"][n] / gpt["temp_MiB"]["autodiff"] for n in gpt["temp_MiB"]}
    gpt.update(time_ratio=gpt_time, memory_ratio=gpt_mem)
    best = min(("manual whole", "manual blocked"), key=lambda n: gpt_time[n])

    def item(metric, value, reference, target):  # the targets are the full size's (T to 2048)
        ok = None if value is None else value <= target
        return common.headline(metric, value, reference, ok, at="full")

    headline = [
        item("blocked attention memory exponent in T", exponents["manual blocked"],
             f"<= 1.1 (autodiff plain: {exponents['autodiff plain']:.2f})", 1.1),
        item("blocked / autodiff memory at T = 1024", mem_1024, "<= 0.25", 0.25),
        item("whole-matrix manual / autodiff time, worst T", whole_time, "<= 1.0", 1.0),
        item(f"GPT step time / autodiff ({best})", gpt_time[best], "<= 1.0", 1.0),
        item("GPT step memory / autodiff (manual blocked)", gpt_mem["manual blocked"],
             f"<= 0.7 (whole: {gpt_mem['manual whole']:.2f})", 0.7),
    ]  # fmt: skip
    return exponents, headline


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths")
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--gpt-T", type=int, default=None)
    p.add_argument("--gpt-batch", type=int, default=8)
    args = p.parse_args(argv)
    out = common.out_dir(args)
    Ts = args.T or ([128, 256] if args.quick else [128, 256, 512, 1024, 2048])
    gpt_T = args.gpt_T or (64 if args.quick else 256)
    repeat = args.repeat or (3 if args.quick else 7)
    rows = []
    print(f"{'T':>5} " + " ".join(f"{n + ' ms/MiB':>26}" for n in attention_methods(1)))
    for T in Ts:
        rounds = max(repeat, 12800 // T) if T < 1024 else 3  # short calls: more rounds
        r = bench_attention(T, 4, 4, 32, min(args.block, T), rounds, args.seed)
        rows.append(r)
        cells = [f"{r['time_ms'][n]:12.1f} {r['temp_MiB'][n]:12.1f}" for n in r["time_ms"]]
        print(f"{T:>5} " + " ".join(f"{c:>26}" for c in cells), flush=True)
    gpt = bench_gpt_step(gpt_T, args.gpt_batch, min(args.block, gpt_T, 64), repeat, args.seed)
    print("GPT step:", {n: round(t, 1) for n, t in gpt["time_ms"].items()}, "ms;",
          {n: round(m, 1) for n, m in gpt["temp_MiB"].items()}, "MiB")  # fmt: skip
    exponents, headline = summarize(rows, gpt, args.block)
    plot(rows, out / "bench_attention.png")
    complete = not args.quick and all(h["ok"] is not None for h in headline)
    result = {
        "config": {"batch": 4, "heads": 4, "head_dim": 32, "causal": True, "dtype": "float32",
                   "block_size": args.block, "T": Ts, "repeat": repeat},
        "rows": rows,
        "memory_exponent": exponents,
        "gpt_step": gpt,
        "machine": common.machine(),
        "report": common.report(
            "Attention and GPT step: manual backward vs autodiff",
            "python -m experiments.bench_attention",
            headline,
            ["bench_attention.png"],
            status="ok" if complete and all(h["ok"] for h in headline) else "partial",
            notes=("quick size: " if args.quick else "")
            + f"T = {Ts}, GPT step at T = {gpt_T}; medians of max({repeat}, 12800 / T) "
            "interleaved runs (3 at T >= 1024); the machine may be shared, so times are noisy, "
            "ratios less so.",
            size=common.run_size(args),
        ),
    }  # fmt: skip
    common.save_json(out / "bench_attention.json", result)
    return result


if __name__ == "__main__":
    main()
