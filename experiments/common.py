"""Shared plumbing for the experiment scripts: arguments, result files, figures."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="the small size `make demo` runs")
    default_out = os.environ.get("JAXBP_RESULTS", "results")
    p.add_argument("--out", default=default_out, help="results folder")
    p.add_argument("--seed", type=int, default=0)
    return p


def out_dir(args) -> Path:
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path


def new_figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def median_time(fn, *args, repeat: int = 20, warmup: int = 2) -> float:
    """Median wall time of `fn(*args)` in seconds, blocking on its result; compile excluded."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


# ------------------------------------------------------------------------- the report key
#
# Every experiment's main JSON (results/<module name>.json) carries a "report" key, read by
# experiments/report.py to build results/index.html. Values come from the run; references are
# the published or expected numbers (the README's tables); "ok" compares the value with a
# target, or is None when there is no target.


def adam_epochs(value_and_grad, params, x_train, *, seed, epochs, batch, lr):
    """Adam over shuffled minibatches of `x_train`, one jit-compiled `lax.scan` per epoch,
    run by the public loop (`jaxbp.loop.loop`, one call per epoch).

    `value_and_grad(params, x, key) -> (value, grads)` gets each batch and a fresh key (for
    noise or sampling). Returns the final params and the mean loss of each epoch."""
    import numpy as np
    import optax

    from jaxbp import loop, optim

    opt = optim.adam(lr)
    x_train = jax.numpy.asarray(x_train)
    n_batches = x_train.shape[0] // batch

    def step(carry, inputs):
        params, opt_state = carry
        idx, key = inputs
        value, grads = value_and_grad(params, x_train[idx], key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def epoch(carry, key):
        k_perm, k_step = jax.random.split(key)
        perm = jax.random.permutation(k_perm, x_train.shape[0])[: n_batches * batch]
        keys = jax.random.split(k_step, n_batches)
        carry, values = jax.lax.scan(step, carry, (perm.reshape(n_batches, batch), keys))
        return carry, values.mean()

    curve = []
    carry = loop.loop(
        epoch,
        (params, opt.init(params)),
        lambda step, count: jax.random.key(seed * 100003 + step // n_batches),  # epoch's key
        steps=epochs * n_batches,
        steps_per_call=n_batches,  # one compiled call per epoch
        callbacks=[lambda tick: curve.append(float(tick.out))],
    )
    return carry[0], np.asarray(curve)


def headline(metric: str, value, reference: str = "", ok: bool | None = None, *, at="any"):
    """One row of a report: a measured `value` next to its `reference`. `at` is the size the
    target applies to: "any" (a quick run can show it) or "full" (only the full run can; the
    page does not judge it on a quick or tiny run)."""
    if at not in SIZES_OF_TARGETS:
        raise ValueError(f"headline {metric!r}: at must be one of {SIZES_OF_TARGETS}, got {at!r}")
    return {"metric": metric, "value": value, "reference": reference,
            "ok": None if ok is None else bool(ok), "at": at}  # fmt: skip


SIZES_OF_TARGETS = ("any", "full")
RUN_SIZES = ("quick", "full", "tiny")


def report(
    title: str,
    command: str,
    headlines: list[dict],
    figures=(),
    *,
    status: str = "ok",
    notes: str = "",
    size: str | None = None,
) -> dict:
    """The "report" key: `figures` are paths or names, stored relative to the results folder;
    `status` is "ok", "partial" (parts skipped, said in `notes`) or "failed"; `size` is the
    size of the run ("quick", "full", "tiny"; `run_size(args)`), required when a headline's
    target applies at the full size only."""
    if status not in ("ok", "partial", "failed"):
        raise ValueError(f"report: status must be ok, partial or failed, got {status!r}")
    if size is not None and size not in RUN_SIZES:
        raise ValueError(f"report: size must be one of {RUN_SIZES}, got {size!r}")
    headlines = [{"at": "any", **h} for h in headlines]
    if size is None and any(h["at"] == "full" for h in headlines):
        raise ValueError(f"report {title!r}: a full-size target needs the run's size=")
    return {
        "title": title,
        "command": command,
        "headline": headlines,
        "figures": [Path(f).name for f in figures],
        "status": status,
        "notes": notes,
        "size": size,
    }


def run_size(args) -> str:
    """ "tiny" (the test suite's size), "quick" (--quick) or "full"."""
    if getattr(args, "tiny", False):
        return "tiny"
    return "quick" if getattr(args, "quick", False) else "full"


def size_note(args, full: str) -> str:
    """'quick size ...' or 'full size' for a report's notes (`full`: what the full run is)."""
    if getattr(args, "tiny", False):
        return f"tiny size (the test suite's), not the full run ({full})"
    return f"quick size (--quick), not the full run ({full})" if args.quick else "full size"
