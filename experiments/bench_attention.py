"""Attention and one GPT training step: hand-written backward against autodiff, time and memory.

    python -m experiments.bench_attention [--quick]

Attention (float32, B = 4, 4 heads of width 32, T = 16 … 2048, causal and not): value and
gradient (dQ, dK, dV) of ⟨G, O⟩ for a fixed random G, by five methods in one process from the
same inputs: the manual op in its default form (`block_size=None`: the form
`attention.choose_block_size` picks from T), the manual whole-matrix form (`block_size=T`), the
manual blocked form (`--block`, default 128), `jax.value_and_grad` of the plain formula
softmax(QKᵀ/√d + mask) V, and of `jax.nn.dot_product_attention` (fed its own (B, T, H, d)
layout). Times are medians of runs interleaved across the methods, so machine load hits all
alike; memory is the compiled temporary memory
(`.lower(...).compile().memory_analysis().temp_size_in_bytes`; the outputs are the same four
arrays for every method). The fitted exponent is the slope of log(memory) against log(T) over
T ≥ 256. GPT step: one value+grad of the token cross-entropy of a GPT (vocab 96, dim 128, 4
layers, 4 heads, T = 256, B = 8), manual (default, whole and blocked attention) against
`jax.value_and_grad` of the same forward.

Targets from the issues: the default form ≤ 1.0× autodiff's time at every T, causal and not,
and below `jax.nn.dot_product_attention`'s autodiff; whole-matrix memory ≤ 0.7× autodiff's;
blocked memory exponent ≤ 1.1 and ≤ 0.25× autodiff's at T = 1024; GPT step ≤ 1.0× time.
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

TS = [16, 32, 64, 128, 256, 512, 1024, 2048]
MANUAL = ("manual default", "manual whole", "manual blocked")


def plain_attention(q, k, v, causal=True):
    """The formula as autodiff sees it: softmax of the (causally masked) scores, times V."""
    T, d = q.shape[-2:]
    S = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    if causal:
        S = jnp.where(jnp.tril(jnp.ones((T, T), bool)), S, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(S, axis=-1), v)


def attention_methods(block, causal=True, T=None):
    """name -> fn(q, k, v, G) -> (⟨G, O⟩, (dQ, dK, dV)); the jax.nn one takes (B, T, H, d).
    "manual whole" passes block_size = T (any block ≥ T is the whole-matrix form)."""

    def manual(block_size):
        def fn(q, k, v, G):
            b = q.shape[2] if block_size == "T" else block_size
            o, res = attention.attention_forward(q, k, v, causal=causal, block_size=b)
            grads = attention.attention_backward(res, G, causal=causal, block_size=b)
            return jnp.vdot(G, o), grads

        return fn

    def autodiff(f):
        return jax.value_and_grad(lambda q, k, v, G: jnp.vdot(G, f(q, k, v)), argnums=(0, 1, 2))

    return {
        "manual default": manual(None),
        "manual whole": manual("T"),
        "manual blocked": manual(block),
        "autodiff plain": autodiff(lambda q, k, v: plain_attention(q, k, v, causal)),
        "autodiff jax.nn": autodiff(
            lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal)
        ),
    }


def bench_attention(T, batch, heads, head_dim, block, repeat, seed=0, causal=True):
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v, G = (jax.random.normal(kk, (batch, heads, T, head_dim)) for kk in keys)
    bthd = tuple(jnp.swapaxes(a, 1, 2) for a in (q, k, v, G))  # jax.nn's layout
    methods = attention_methods(block, causal)
    args = {name: bthd if "jax.nn" in name else (q, k, v, G) for name in methods}
    fns = {name: compiled(fn, *args[name]) for name, fn in methods.items()}
    ref = fns["autodiff plain"](*args["autodiff plain"])[1]
    default = attention.choose_block_size(T, head_dim)
    row = {"T": T, "causal": causal, "default_form": "whole" if default is None else default}
    row.update(grad_rel_err={}, time_ms={}, temp_MiB={})
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
    """One value+grad of the token loss: manual (default, whole, blocked attention) vs
    jax.value_and_grad of the same forward."""
    loss = jaxbp.losses.token_cross_entropy()
    ids = jax.random.randint(jax.random.key(seed + 1), (batch, T + 1), 0, vocab)
    x, y = ids[:, :-1], ids[:, 1:]
    models = {
        name: jaxbp.GPT(
            vocab, features=dim, depth=layers, heads=heads, max_len=T, block_size=block_size
        )
        for name, block_size in zip(MANUAL, (None, T, block))
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
    fig, axes = common.new_figure(1, 3, figsize=(15, 4))
    for causal, ax in ((True, axes[0]), (False, axes[1])):
        sub = [r for r in rows if r["causal"] == causal]
        Ts = [r["T"] for r in sub]
        for name in sub[0]["time_ratio"]:
            ax.plot(Ts, [r["time_ratio"][name] for r in sub], "o-", label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_title(("causal" if causal else "not causal") + ": time / autodiff plain")
    sub = [r for r in rows if r["causal"]]
    for name in sub[0]["temp_MiB"]:
        axes[2].plot([r["T"] for r in sub], [r["temp_MiB"][name] for r in sub], "o-", label=name)
    axes[2].set_yscale("log")
    axes[2].set_title("causal: compiled temporary memory (MiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle("attention, float32, B=4, 4 heads × 32: manual backward vs autodiff")
    return common.save_figure(fig, path)


def summarize(rows, gpt):
    """Ratios against the plain autodiff, the fitted exponents, and the report headline."""
    for r in rows:
        auto_t, auto_m = r["time_ms"]["autodiff plain"], r["temp_MiB"]["autodiff plain"]
        r["time_ratio"] = {n: t / auto_t for n, t in r["time_ms"].items()}
        r["memory_ratio"] = {n: m / auto_m for n, m in r["temp_MiB"].items()}
        r["default_vs_jax_nn"] = r["time_ms"]["manual default"] / r["time_ms"]["autodiff jax.nn"]
    causal = [r for r in rows if r["causal"] and r["T"] >= 256]
    exponents = {
        name: fitted_exponent([r["T"] for r in causal], [r["temp_MiB"][name] for r in causal])
        if len(causal) > 1 else None
        for name in rows[0]["temp_MiB"]
    }  # fmt: skip
    at_1024 = [r for r in rows if r["T"] == 1024 and r["causal"]]
    mem_1024 = at_1024[0]["memory_ratio"]["manual blocked"] if at_1024 else None
    gpt_time = {n: gpt["time_ms"][n] / gpt["time_ms"]["autodiff"] for n in gpt["time_ms"]}
    gpt_mem = {n: gpt["temp_MiB"][n] / gpt["temp_MiB"]["autodiff"] for n in gpt["temp_MiB"]}
    gpt.update(time_ratio=gpt_time, memory_ratio=gpt_mem)

    def worst(key, name, causal, min_T=0):
        sub = [r for r in rows if r["causal"] == causal and r["T"] >= min_T] or rows
        top = max(sub, key=lambda r: r[key][name] if key != "jax" else r["default_vs_jax_nn"])
        value = top[key][name] if key != "jax" else top["default_vs_jax_nn"]
        return value, top["T"]

    def item(metric, value, reference, target):  # the targets are the full size's (T to 2048)
        ok = None if value is None else value <= target
        return common.headline(metric, value, reference, ok, at="full")

    headline = []
    for c in sorted({r["causal"] for r in rows}, reverse=True):
        tag = "causal" if c else "not causal"
        v, T = worst("time_ratio", "manual default", c)
        headline.append(item(f"default form / autodiff time, worst T ({tag}; at T = {T})",
                             v, "<= 1.0", 1.0))  # fmt: skip
        v, T = worst("jax", None, c)
        headline.append(item(f"default form / jax.nn autodiff time, worst T ({tag}; T = {T})",
                             v, "<= 1.0", 1.0))  # fmt: skip
    v, T = worst("memory_ratio", "manual whole", True, min_T=64)
    headline += [
        item(f"whole-matrix / autodiff memory, worst T >= 64 (T = {T})", v,
             "<= 0.7 (at T <= d = 32 a T×T temporary fits an output's buffer: see notes)", 0.7),
        item("blocked attention memory exponent in T (T >= 256)", exponents["manual blocked"],
             f"<= 1.1 (autodiff plain: {exponents['autodiff plain']})", 1.1),
        item("blocked / autodiff memory at T = 1024", mem_1024, "<= 0.25", 0.25),
        item("GPT step time / autodiff (default attention)", gpt_time["manual default"],
             "<= 1.0", 1.0),
        item("GPT step memory / autodiff (manual blocked)", gpt_mem["manual blocked"],
             f"<= 0.7 (whole: {gpt_mem['manual whole']:.2f})", 0.7),
    ]  # fmt: skip
    return exponents, headline


def rounds_for(T, repeat):
    """More rounds for short calls: max(repeat, 25600 / T) below T = 1024, else `repeat`."""
    return max(repeat, 25600 // T) if T < 1024 else repeat


def _small_t_memory(rows) -> str:
    """' (whole / autodiff: 0.94 at T = 16, …)' for the causal rows at T ≤ 32, from the run."""
    cells = [
        f"{r['memory_ratio']['manual whole']:.2f} at T = {r['T']} "
        f"({1024 * r['temp_MiB']['manual whole']:.0f} KiB against "
        f"{1024 * r['temp_MiB']['autodiff plain']:.0f})"
        for r in rows
        if r["T"] <= 32 and r["causal"] and "manual whole" in r.get("memory_ratio", {})
    ]
    return f" (whole / autodiff: {', '.join(cells)})" if cells else ""


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths")
    p.add_argument("--block", type=int, default=attention.AUTO_BLOCK)
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved rounds at every T (default: max(3 or 5, 25600 / T))",
    )
    p.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    p.add_argument("--gpt-T", type=int, default=None)
    p.add_argument("--gpt-batch", type=int, default=8)
    p.add_argument("--gpt-width", type=int, default=128, help="GPT features (4 heads)")
    p.add_argument("--gpt-depth", type=int, default=4, help="GPT blocks")
    args = p.parse_args(argv)
    out = common.out_dir(args)
    Ts = args.T or ([16, 128, 512] if args.quick else TS)
    causals = {"both": [True, False], "yes": [True], "no": [False]}[args.causal]
    gpt_T = args.gpt_T or (64 if args.quick else 256)
    repeat = args.repeat or (3 if args.quick else 5)
    rows = []
    names = list(attention_methods(1))
    print(f"{'T':>5} {'causal':>6} " + " ".join(f"{n + ' ms/MiB':>26}" for n in names))
    for T in Ts:
        for causal in causals:
            rounds = rounds_for(T, repeat) if args.repeat is None else args.repeat
            r = bench_attention(T, 4, 4, 32, min(args.block, T), rounds, args.seed, causal)
            rows.append(r)
            cells = [f"{r['time_ms'][n]:12.2f} {r['temp_MiB'][n]:12.1f}" for n in names]
            print(f"{T:>5} {causal!s:>6} " + " ".join(f"{c:>26}" for c in cells), flush=True)
    gpt = bench_gpt_step(gpt_T, args.gpt_batch, min(args.block, gpt_T, 64), repeat, args.seed,
                         dim=args.gpt_width, layers=args.gpt_depth)  # fmt: skip
    print("GPT step:", {n: round(t, 1) for n, t in gpt["time_ms"].items()}, "ms;",
          {n: round(m, 1) for n, m in gpt["temp_MiB"].items()}, "MiB")  # fmt: skip
    exponents, headline = summarize(rows, gpt)
    plot(rows, out / "bench_attention.png")
    complete = not args.quick and all(h["ok"] is not None for h in headline)
    rule = {"whole_max_T": attention.WHOLE_MAX_T, "block": attention.AUTO_BLOCK}
    result = {
        "config": {"batch": 4, "heads": 4, "head_dim": 32, "causal": causals, "dtype": "float32",
                   "block_size": args.block, "T": Ts, "repeat": repeat, "default_rule": rule},
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
            + f"T = {Ts}, GPT step at T = {gpt_T}; medians of "
            + (f"max({repeat}, 25600 / T) interleaved runs ({repeat} at T >= 1024)"
               if args.repeat is None else f"{repeat} interleaved runs")
            + "; the default form is the whole matrix "
            f"for T <= {rule['whole_max_T']}, blocks of {rule['block']} beyond; the machine "
            "may be shared, so times are noisy, ratios less so. At T <= 32 (= the head size) "
            "the temporaries are a few T×T arrays of the outputs' size that XLA partly places "
            "in output buffers, so memory ratios there say little" + _small_t_memory(rows) + ".",
            size=common.run_size(args),
        ),
    }  # fmt: skip
    common.save_json(out / "bench_attention.json", result)
    return result


if __name__ == "__main__":
    main()
