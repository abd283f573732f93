"""Character-level language model on the English text CPython ships with itself.

    python -m experiments.char_lm [--quick]

Text: every topic of `pydoc_data.topics` (the interactive help's reference text, ~465 KB,
no download), joined in sorted order; a fixed split, the first 90 % for training and the last
10 % for validation. Two models with the same parameter count and the same number of steps,
both trained with their hand-written backward: a GPT (full size: 4 layers, 4 heads, dim 128,
context 128, ~0.8 M parameters) and an LSTM char-LM (Embedding → LSTM → Dense, hidden width
chosen to match the GPT's count), both with dropout 0.1 at full size (0 at `--quick`).
Reports validation loss in nats and bits per character, a unigram baseline, loss curves,
generated samples (temperature 0.8, top-k 10) and tokens per second. The GPT's samples come
from `jaxbp.generate` (key/value-cache decoding), one per prompt in a batch of prompts, each up
to the context length; the LSTM's from a loop over its forward, as long as the GPT's.

It also runs the agreement check: a small GPT in float64 trained for 200 steps twice from the
same init and batches, once with `jaxbp.loss_and_grad` and once with `jax.value_and_grad`;
the two loss curves must agree to ≤ 1e-9 relative.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import loop, optim, train

FULL = dict(dim=128, layers=4, heads=4, ctx=128, batch=32, steps=2000, lr=2e-3, eval_every=200)
QUICK = dict(dim=32, layers=2, heads=2, ctx=32, batch=16, steps=120, lr=3e-3, eval_every=40)


def load_text():
    """(text, vocabulary, ids): the pydoc topics joined in sorted order, as int32 ids."""
    import pydoc_data.topics as topics

    text = "".join(topics.topics[k] for k in sorted(topics.topics))
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    return text, vocab, np.array([lookup[c] for c in text], np.int32)


def split(ids, frac=0.9):
    n = int(len(ids) * frac)
    return ids[:n], ids[n:]


def windows(data, rng, shape, ctx):
    """Random windows of ctx + 1 characters: (inputs, next characters), each (*shape, ctx)."""
    starts = rng.integers(0, len(data) - ctx - 1, size=shape)
    w = data[starts[..., None] + np.arange(ctx + 1)]
    return w[..., :-1], w[..., 1:]


def unigram_nats(train_ids, val_ids, vocab_size):
    """Validation cross-entropy of the add-one-smoothed train character frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


def lstm_hidden_for(target_params, vocab, embed):
    """The LSTM width H whose Embedding(V, E) + LSTM(H) + Dense(V) count is nearest the target:
    V·E + 4H(E + H + 1) + H·V + V (a 4H bias; see jaxbp.LSTM)."""

    def count(h):
        return vocab * embed + 4 * h * (embed + h + 1) + h * vocab + vocab

    return min(range(8, 2048), key=lambda h: abs(count(h) - target_params))


def build_models(vocab, cfg, dropout):
    gpt = jaxbp.GPT(
        vocab,
        features=cfg["dim"],
        depth=cfg["layers"],
        heads=cfg["heads"],
        max_len=cfg["ctx"],
        dropout=dropout,
    )
    _, p, _ = gpt.init(jax.random.key(0), (cfg["ctx"],))
    n_gpt = sum(int(a.size) for a in jax.tree.leaves(p))
    embed = cfg["dim"] // 2
    hidden = lstm_hidden_for(n_gpt, vocab, embed)
    lstm = jaxbp.serial(
        jaxbp.Embedding(vocab, embed, w_init=jaxbp.init.normal(0.1)),
        jaxbp.Dropout(dropout),
        jaxbp.LSTM(hidden, return_sequences=True),
        jaxbp.Dropout(dropout),
        jaxbp.Dense(vocab),
    )
    return {"GPT": gpt, "LSTM": lstm}, hidden


def evaluate(model, params, state, val, cfg, batches, seed=1):
    """Mean validation loss (nats/char) over fixed random windows."""
    loss = jaxbp.losses.token_cross_entropy()
    x, y = windows(val, np.random.default_rng(seed), (batches, cfg["batch"]), cfg["ctx"])

    @jax.jit
    def value(params, x, y):
        return loss.forward(model.forward(params, state, x)[0], y)[0]

    return float(np.mean([value(params, x[i], y[i]) for i in range(batches)]))


def train_model(name, model, train_ids, val, cfg, args, eval_batches):
    """Adam(W) with warmup + cosine decay, clip 1.0; returns the curves and the final params."""
    warmup = min(50, max(1, cfg["steps"] // 10))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg["lr"], warmup, max(cfg["steps"], warmup + 1), cfg["lr"] / 10
    )
    opt = optim.adamw(schedule, b2=0.99, weight_decay=0.01)
    ts = train.init_train_state(model, opt, jax.random.key(args.seed), (cfg["ctx"],))
    chunk = cfg["eval_every"]
    step = train.make_train_step(
        model, jaxbp.losses.token_cross_entropy(), opt, steps_per_call=chunk, clip_norm=1.0
    )
    rng = np.random.default_rng(args.seed)
    curve, val_curve, seconds = [], [], []

    def timed_step(ts, batch):  # one compiled call of `chunk` steps
        t0 = time.perf_counter()
        ts, losses = step(ts, *batch)
        losses = np.asarray(losses)  # blocks until the chunk is done
        seconds.append(time.perf_counter() - t0)
        return ts, losses

    def record(tick):
        ts, done = tick.state, tick.step
        curve.append([done, float(tick.out.mean())])
        val_curve.append([done, evaluate(model, ts.params, ts.model_state, val, cfg, eval_batches)])
        print(f"{name} step {done}: train {curve[-1][1]:.3f}  val {val_curve[-1][1]:.3f}"
              " nats/char", flush=True)  # fmt: skip

    ts = loop.loop(
        timed_step,
        ts,
        lambda done, count: windows(train_ids, rng, (chunk, cfg["batch"]), cfg["ctx"]),
        steps=-(-cfg["steps"] // chunk) * chunk,  # whole chunks
        steps_per_call=chunk,
        callbacks=[record],
    )
    train_time = sum(seconds[1:])  # the first chunk compiles
    timed_steps = cfg["steps"] - chunk
    tps = timed_steps * cfg["batch"] * cfg["ctx"] / train_time if timed_steps else float("nan")
    return ts, {"train_curve": curve, "val_curve": val_curve, "tokens_per_s": tps,
                "train_seconds": train_time}  # fmt: skip


def sample(model, params, state, prompt, n, ctx, *, temperature, top_k, key):
    """n characters after `prompt` (ids), each from the model's last `ctx` characters."""
    buf = jnp.zeros(max(len(prompt) + n, ctx), jnp.int32).at[: len(prompt)].set(prompt)

    def body(i, carry):
        buf, key = carry
        pos = len(prompt) + i  # the index being written
        start = jnp.maximum(pos - ctx, 0)
        window = jax.lax.dynamic_slice(buf, (start,), (ctx,))[None]  # (1, ctx)
        logits = model.forward(params, state, window)[0][0, pos - 1 - start] / temperature
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
        key, sub = jax.random.split(key)
        return buf.at[pos].set(jax.random.categorical(sub, logits).astype(jnp.int32)), key

    buf, _ = jax.jit(lambda b, k: jax.lax.fori_loop(0, n, body, (b, k)))(buf, key)
    return np.asarray(buf[: len(prompt) + n])


PROMPTS = ("The ", "def ", "In a", "For ")  # one batch: prompts of one length


def samples_of(name, model, ts, vocab, n, ctx, *, key):
    """Texts of a prompt and n characters at temperature 0.8, top-k 10: the GPT's from
    `jaxbp.generate`, one per prompt of PROMPTS (a batch); the LSTM's from `sample`, one."""
    if name == "GPT":
        prompts = jnp.array([[vocab.index(c) for c in p] for p in PROMPTS], jnp.int32)
        ids = jaxbp.generate(model, ts.params, prompts, n, key=key, temperature=0.8, top_k=10)
    else:
        prompt = np.array([vocab.index(c) for c in PROMPTS[0]], np.int32)
        ids = [sample(model, ts.params, ts.model_state, prompt, n, ctx, temperature=0.8,
                      top_k=10, key=key)]  # fmt: skip
    return ["".join(vocab[i] for i in row) for row in np.asarray(ids)]


def agreement_run(steps=200, seed=0, adam=True):
    """Float64: the loss curves of manual and jax.value_and_grad training from one init, with
    SGD + momentum (the headline) and with Adam (whose per-element normalization lifts
    rounding-level gradient differences on near-zero entries to O(lr) steps)."""
    _, vocab, ids = load_text()
    train_ids, _ = split(ids)
    model = jaxbp.GPT(len(vocab), features=16, depth=2, heads=2, max_len=16)
    loss = jaxbp.losses.token_cross_entropy()
    x, y = windows(train_ids, np.random.default_rng(seed), (steps, 4), 16)
    with jax.enable_x64(True):
        _, params0, state = model.init(jax.random.key(seed), (16,))
        params0 = jax.tree.map(lambda p: p.astype(jnp.float64), params0)
        manual = jaxbp.loss_and_grad(model, loss)

        def autodiff(p, x, y):
            return jax.value_and_grad(lambda q: loss.forward(model.forward(q, state, x)[0], y)[0])(
                p
            )

        grads = {
            "manual": lambda p, x, y: manual(p, state, x, y)[:2],
            "autodiff": jax.jit(autodiff),
        }
        result = {"steps": steps}
        opts = {"sgd": optim.sgd(0.3, momentum=0.9), "adam": optim.adam(1e-2)}
        for opt_name, opt in list(opts.items())[: 2 if adam else 1]:
            curves = {name: _curve(vg, opt, params0, x, y) for name, vg in grads.items()}
            rel = np.abs(curves["manual"] - curves["autodiff"]) / np.abs(curves["autodiff"])
            result[opt_name] = {"max_rel_diff": float(rel.max()),
                                **{k: v.tolist() for k, v in curves.items()}}  # fmt: skip
    return result


def _curve(value_and_grad, opt, params, x, y):
    """The loss at each of len(x) optimizer steps from `params`."""

    @jax.jit
    def update(p, o, g):
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    def one_step(carry, batch):
        params, o = carry
        value, g = value_and_grad(params, *batch)
        return update(params, o, g), value

    curve = []
    loop.loop(
        one_step,
        (params, opt.init(params)),
        lambda i, count: (x[i], y[i]),
        steps=len(x),
        callbacks=[lambda tick: curve.append(float(tick.out))],
    )
    return np.array(curve)


def plot(runs, unigram, path):
    fig, ax = common.new_figure(figsize=(7, 4))
    for (name, run), color in zip(runs.items(), ("C0", "C1")):
        s, v = np.array(run["train_curve"]).T
        ax.plot(s, v, "--", color=color, label=f"{name} train")
        s, v = np.array(run["val_curve"]).T
        ax.plot(s, v, "o-", color=color, label=f"{name} validation")
    ax.axhline(unigram, color="gray", lw=1, label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("character LM on pydoc_data.topics")
    return common.save_figure(fig, path)


def _config(args):
    cfg = dict(QUICK if args.quick else FULL)
    for k in cfg:
        if getattr(args, k, None) is not None:
            cfg[k] = getattr(args, k)
    return cfg


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    for k in FULL:
        p.add_argument(f"--{k.replace('_', '-')}", type=type(FULL[k]), default=None)
    p.add_argument("--dropout", type=float, default=None, help="both models (full: 0.1)")
    p.add_argument("--agreement-steps", type=int, default=200)
    p.add_argument("--samples", type=int, default=300,
                   help="characters to generate (at most the context length − 4)")  # fmt: skip
    args = p.parse_args(argv)
    out, cfg = common.out_dir(args), _config(args)
    text, vocab, ids = load_text()
    train_ids, val = split(ids)
    unigram = unigram_nats(train_ids, val, len(vocab))
    if args.dropout is None:
        args.dropout = 0.0 if args.quick else 0.1
    models, hidden = build_models(len(vocab), cfg, args.dropout)
    eval_batches = 4 if args.quick else 16
    runs, samples = {}, {}
    n_sample = min(args.samples, cfg["ctx"] - len(PROMPTS[0]))  # generate stops at max_len
    for name, model in models.items():
        ts, runs[name] = train_model(name, model, train_ids, val, cfg, args, eval_batches)
        runs[name]["params"] = sum(int(a.size) for a in jax.tree.leaves(ts.params))
        runs[name]["val_nats"] = runs[name]["val_curve"][-1][1]
        runs[name]["val_bits"] = runs[name]["val_nats"] / math.log(2)
        texts = samples_of(name, model, ts, vocab, n_sample, cfg["ctx"],
                           key=jax.random.key(args.seed))  # fmt: skip
        runs[name]["samples"], samples[name] = texts, texts[0]
        print(f"--- {name} samples:\n" + "\n---\n".join(texts) + "\n---", flush=True)
    agreement = None
    if args.agreement_steps:  # the Adam comparison only at full size (it is informational)
        agreement = agreement_run(args.agreement_steps, args.seed, adam=not args.quick)
    if agreement:
        diffs = {k: v["max_rel_diff"] for k, v in agreement.items() if k != "steps"}
        print(f"float64 agreement over {agreement['steps']} steps (max rel): {diffs}")
    plot(runs, unigram, out / "char_lm_loss.png")
    result = report(args, cfg, hidden, len(text), len(vocab), unigram, runs, samples, agreement)
    common.save_json(out / "char_lm.json", result)
    return result


def report(args, cfg, hidden, n_chars, vocab, unigram, runs, samples, agreement):
    gpt, lstm = runs["GPT"]["val_nats"], runs["LSTM"]["val_nats"]
    headline = [
        {"metric": "GPT validation loss (nats/char)", "value": gpt,
         "reference": f"< 1.6 (issue target, full size); unigram {unigram:.2f}",
         "ok": bool(gpt < 1.6), "at": "full"},
        {"metric": "LSTM validation loss (nats/char)", "value": lstm,
         "reference": "GPT below it", "ok": bool(gpt < lstm), "at": "full"},
        {"metric": "GPT bits per character", "value": runs["GPT"]["val_bits"], "reference": None,
         "ok": None},
        {"metric": "GPT training tokens/s", "value": runs["GPT"]["tokens_per_s"],
         "reference": f"LSTM {runs['LSTM']['tokens_per_s']:.0f}", "ok": None},
    ]  # fmt: skip
    if agreement:
        sgd = agreement["sgd"]["max_rel_diff"]
        headline.append(
            {
                "metric": "float64 manual vs jax.value_and_grad loss curves, SGD (max rel)",
                "value": sgd,
                "reference": f"<= 1e-9 over {agreement['steps']} steps",
                "ok": bool(sgd <= 1e-9),
            }
        )
    if agreement and "adam" in agreement:
        headline.append({"metric": "the same with Adam (informational)",
                         "value": agreement["adam"]["max_rel_diff"],
                         "reference": "Adam amplifies rounding on near-zero gradients",
                         "ok": None})  # fmt: skip
    full = not args.quick and cfg == FULL
    met = all(h["ok"] is not False for h in headline)
    notes = (
        f"{'quick' if args.quick else 'full' if full else 'custom'} size: {cfg['steps']} steps of "
        f"{cfg['batch']}×{cfg['ctx']} characters, GPT {runs['GPT']['params']} and LSTM "
        f"{runs['LSTM']['params']} parameters (hidden {hidden})."
    )
    return {
        "config": cfg, "dropout": args.dropout, "text_chars": n_chars, "vocab": vocab,
        "unigram_nats": unigram, "runs": runs, "samples": samples, "agreement": agreement,
        "lstm_hidden": hidden, "machine": common.machine(),
        "report": common.report(
            "Character-level language model", "python -m experiments.char_lm", headline,
            ["char_lm_loss.png"], status="ok" if full and met else "partial", notes=notes,
            size="full" if full else common.run_size(args),
        ),
    }  # fmt: skip


if __name__ == "__main__":
    main()
