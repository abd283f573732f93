"""GPT decoding speed: `jaxbp.generate` (key/value cache) against the uncached loop.

    python -m experiments.bench_generate [--quick]

Model: a GPT (vocab 96, features 128, depth 4, 4 heads, max_len 1024, float32, random init),
greedy decoding of B = 1 sequence. At each total length T ∈ {64, 256, 1024} both methods start
from the same prompt of T − n tokens and write the n = min(32, T/2) tokens up to T:

- **uncached**: for each new token, a full forward over the (B, T) buffer and the argmax of
  the last written position, one `lax.fori_loop` under one `jax.jit` (the static-shape way:
  the causal model ignores the positions not yet written; the sequence so far is T − n … T
  long, so this is the growing-sequence cost to within n/T);
- **cached**: `generate(model, params, prompt, n, temperature=0)`, its prefill included;
- **cached, decoding only**: (time of n tokens − time of 1 token) / (n − 1), the prefill
  subtracted: the per-token rate of the cached steps themselves.

Tokens/s = B·n / the median time of interleaved rounds (machine load hits all methods alike).
A cached step costs O(T·C + C²) and an uncached one O(T·C² + T²·C), so the ratio grows with T.
Both methods' tokens are compared (greedy: they should agree, barring float near-ties).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxbp
from experiments import common
from experiments.bench_rnn import interleaved_medians

FULL = dict(T=[64, 256, 1024], vocab=96, features=128, depth=4, heads=4, batch=1, new=32,
            repeat=5)  # fmt: skip
QUICK = dict(T=[16, 32], vocab=16, features=32, depth=2, heads=2, batch=1, new=8, repeat=2)


def uncached_decoder(model, state, n):
    """jit fn(params, buffer (B, T)) -> buffer: positions T − n … T − 1 written greedily, each
    from a full forward over the whole buffer."""

    def run(params, ids):
        start = ids.shape[1] - n

        def body(t, ids):
            logits = model.forward(params, state, ids)[0]  # (B, T, V): every position
            token = jnp.argmax(logits[:, t - 1], axis=-1).astype(ids.dtype)
            return ids.at[:, t].set(token)

        return jax.lax.fori_loop(start, start + n, body, ids)

    return jax.jit(run)


def bench_length(model, params, state, T, n, batch, repeat, seed=0):
    """Tokens/s of the three methods at total length T (n new tokens), and their agreement."""
    vocab = dict(model.config)["vocab_size"]
    prompt = jax.random.randint(jax.random.key(seed + T), (batch, T - n), 0, vocab)
    buffer = jnp.zeros((batch, T), prompt.dtype).at[:, : T - n].set(prompt)
    uncached = uncached_decoder(model, state, n)

    def cached(steps):
        return lambda: jaxbp.generate(model, params, prompt, steps, key=None, temperature=0)

    calls = [lambda: uncached(params, buffer), cached(n), cached(1)]
    same = bool(jnp.array_equal(calls[0](), calls[1]()))
    t_uncached, t_cached, t_one = interleaved_medians(calls, (), repeat)
    tokens = batch * n
    decode = batch * (n - 1) / (t_cached - t_one) if t_cached > t_one else float("nan")
    row = {"T": T, "new_tokens": n, "prompt": T - n, "same_tokens": same,
           "seconds": {"uncached": t_uncached, "cached": t_cached, "cached 1 token": t_one},
           "tokens_per_s": {"uncached": tokens / t_uncached, "cached": tokens / t_cached,
                            "cached, decoding only": decode}}  # fmt: skip
    base = row["tokens_per_s"]["uncached"]
    row["speedup"] = {k: v / base for k, v in row["tokens_per_s"].items() if k != "uncached"}
    return row


def plot(rows, title, path):
    fig, axes = common.new_figure(1, 2, figsize=(10, 4))
    Ts = [r["T"] for r in rows]
    colors = {"uncached": "C0", "cached": "C1", "cached, decoding only": "C2"}
    for name in rows[0]["tokens_per_s"]:
        axes[0].plot(Ts, [r["tokens_per_s"][name] for r in rows], "o-", c=colors[name], label=name)
    for name in rows[0]["speedup"]:
        axes[1].plot(Ts, [r["speedup"][name] for r in rows], "o-", c=colors[name], label=name)
    axes[0].set_ylabel("tokens/s (median)")
    axes[1].set_ylabel("cached / uncached tokens/s")
    axes[1].axhline(1, color="gray", lw=1)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("total length T")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return common.save_figure(fig, path)


def headlines(rows, full):
    last = rows[-1]
    first_ratio, last_ratio = (r["speedup"]["cached, decoding only"] for r in (rows[0], last))
    prefill_ratio = last["speedup"]["cached"]
    return [
        common.headline(f"cached / uncached tokens/s at T = {last['T']}, prefill included",
                        prefill_ratio, "> 1", prefill_ratio > 1 if full else None),
        common.headline(f"the same, decoding only, at T = {last['T']}", last_ratio,
                        f"grows with T (T = {rows[0]['T']}: {first_ratio:.1f})",
                        last_ratio > first_ratio if full else None),
        common.headline("cached tokens equal the uncached greedy tokens",
                        all(r["same_tokens"] for r in rows),
                        "every T (float32; a near-tie could split them)"),
    ]  # fmt: skip


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=None, help="total lengths")
    p.add_argument("--new", type=int, default=None, help="tokens decoded at each T (≤ T/2)")
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args(argv)
    out, cfg = common.out_dir(args), dict(QUICK if args.quick else FULL)
    for k in ("T", "new", "repeat"):
        cfg[k] = getattr(args, k) or cfg[k]
    model = jaxbp.GPT(cfg["vocab"], features=cfg["features"], depth=cfg["depth"],
                      heads=cfg["heads"], max_len=max(cfg["T"]))  # fmt: skip
    _, params, state = model.init(jax.random.key(args.seed), (max(cfg["T"]),))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    rows = []
    print(f"{'T':>5} {'uncached':>10} {'cached':>10} {'decoding':>10}  tokens/s")
    for T in cfg["T"]:
        n = min(cfg["new"], T // 2)
        r = bench_length(model, params, state, T, n, cfg["batch"], cfg["repeat"], args.seed)
        rows.append(r)
        tps = r["tokens_per_s"]
        print(f"{T:>5} {tps['uncached']:10.1f} {tps['cached']:10.1f} "
              f"{tps['cached, decoding only']:10.1f}  same tokens: {r['same_tokens']}",
              flush=True)  # fmt: skip
    full = not args.quick and cfg == FULL
    n_params = sum(int(a.size) for a in jax.tree.leaves(params))
    title = (f"GPT decoding, {n_params / 1e6:.2f} M params, B = {cfg['batch']}, float32: "
             "key/value cache vs full forward per token")  # fmt: skip
    plot(rows, title, out / "bench_generate.png")
    notes = (
        f"{common.size_note(args, 'T = 64, 256, 1024')}; medians of {cfg['repeat']} "
        "interleaved rounds; times on a shared machine are noisy, ratios less so."
    )
    result = {
        "config": cfg, "params": n_params, "rows": rows, "machine": common.machine(),
        "report": common.report("GPT generation: key/value cache vs uncached",
                                "python -m experiments.bench_generate", headlines(rows, full),
                                ["bench_generate.png"], status="ok" if full else "partial",
                                notes=notes),
    }  # fmt: skip
    common.save_json(out / "bench_generate.json", result)
    return result


if __name__ == "__main__":
    main()
