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
