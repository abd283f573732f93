"""Scaling bookkeeping: communication, memory and step time as a model is split 1/2/4/8 ways.

Three configurations, each trained with Adam by `jaxbp.make_train_step(..., mesh=mesh)`:

- MNIST-1D CNN (experiments.mnist1d.cnn), data-parallel: the batch is split n ways, the
  parameters replicated; one all-reduce of the gradients per step.
- GPT-sized MLP sublayer x + MLP(LayerNorm(x)) with GPT-2 small's sizes (d = 768, hidden
  3072, 4.7 M parameters), tensor-parallel: W1's columns and W2's rows split n ways; one
  all-reduce of the activations forward and one of their gradient backward.
- The same GPT MLP data-parallel, for comparison.

Per configuration and split: the bytes each device communicates per step, read from the
compiled program (every all-reduce / all-gather / reduce-scatter in the optimised HLO, its
buffer size, and the ring-algorithm traffic 2(n−1)/n·S for an all-reduce of S bytes) and
checked against the count the chain rule predicts; the compiled memory per device (XLA's
memory analysis: arguments + outputs + temporaries); and the median step time.

On a CPU the script re-runs itself with `--xla_force_host_platform_device_count=8`, i.e. 8
simulated devices that share the machine's cores: the step times are then a correctness and
bookkeeping run, not a speed-up measurement. On a machine with accelerators it uses the real
devices unchanged (splits up to the device count).

    python -m experiments.scaling            # full size
    python -m experiments.scaling --quick    # make demo size
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import jaxbp
from experiments import common
from jaxbp import distributed, losses, optim, train

FLAG = "--xla_force_host_platform_device_count=8"
D_MODEL, HIDDEN = 768, 3072
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "pred": 1}


# ------------------------------------------------------------------- the three configurations


def gpt_mlp(d_model: int = D_MODEL, hidden: int = HIDDEN):
    """The MLP sublayer of a GPT block, x + W2 gelu(W1 LayerNorm(x)), tensor-parallel."""
    block = jaxbp.serial(jaxbp.LayerNorm(), distributed.TensorParallelMLP(hidden, d_model))
    return jaxbp.residual(block)


def configs(args):
    from experiments.mnist1d import cnn

    tokens, d = (16 if args.quick else 128), args.d_model
    gpt = lambda: gpt_mlp(d, args.hidden)  # noqa: E731
    return [
        dict(
            key="cnn",
            name="MNIST-1D CNN",
            model=cnn,
            mode="data",
            in_shape=(40,),
            batch=256,
            classes=10,
        ),
        dict(key="gpt", name="GPT MLP", model=gpt, mode="model", in_shape=(tokens, d), batch=8),
        dict(key="gpt", name="GPT MLP", model=gpt, mode="data", in_shape=(tokens, d), batch=8),
    ]


def problem(cfg, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["batch"], *cfg["in_shape"])).astype(np.float32)
    if "classes" in cfg:
        return losses.softmax_cross_entropy(), x, rng.integers(0, cfg["classes"], cfg["batch"])
    return losses.mse(), x, rng.normal(size=x.shape).astype(np.float32)


# --------------------------------------------------------------------- reading the program


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def _group_size(line: str, n_devices: int) -> int:
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    if iota:
        return int(iota.group(2))
    explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if explicit:
        return len(explicit.group(1).split(","))
    return n_devices


def collectives(hlo: str, n_devices: int) -> dict:
    """Every collective of the optimised HLO: count, result bytes, ring traffic per device."""
    count, payload, wire = 0, 0, 0.0
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.+?) (" + "|".join(COLLECTIVES) + r")\(", line)
        if not m or "-done" in line:
            continue
        size, kind, n = _shape_bytes(m.group(1)), m.group(2), _group_size(line, n_devices)
        if n <= 1:
            continue
        count += 1
        payload += size
        factor = {"all-reduce": 2 * (n - 1) / n, "all-gather": (n - 1) / n}.get(kind, n - 1)
        wire += size * (factor if kind != "collective-permute" else 1)
    return {"count": count, "payload_bytes": payload, "ring_bytes": wire}


def predicted_payload(cfg, state, n) -> int:
    """The chain rule's count: data-parallel = one all-reduce of every gradient (plus the
    loss); tensor-parallel = the block's activations forward and their gradient backward."""
    if n == 1:
        return 0
    if cfg["mode"] == "data":
        return sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(state.params)) + 4
    return 2 * cfg["batch"] * int(np.prod(cfg["in_shape"])) * 4


def memory_per_device(compiled) -> int | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


# ----------------------------------------------------------------------------- measuring


def measure(cfg, n, args):
    model, (loss, x, y) = cfg["model"](), problem(cfg, args.seed)
    opt = optim.adam(1e-3)
    shape = (n, 1) if cfg["mode"] == "data" else (1, n)
    mesh = distributed.make_mesh(*shape, devices=jax.devices()[:n])
    state = train.init_train_state(model, opt, jax.random.key(args.seed), cfg["in_shape"])
    step = train.make_train_step(model, loss, opt, mesh=mesh, donate=False)
    compiled = step.lower(state, x, y).compile()
    comm = collectives(compiled.as_text(), n)
    state = distributed.shard(state, mesh)
    xs, ys = distributed.shard_batch((x, y), mesh)
    seconds = common.median_time(compiled, state, xs, ys, repeat=args.repeat, warmup=1)
    n_params = sum(p.size for p in jax.tree.leaves(state.params))
    return {
        "model": cfg["name"],
        "parallel": cfg["mode"],
        "devices": n,
        "params": int(n_params),
        "batch": cfg["batch"],
        "example_shape": list(cfg["in_shape"]),
        "collectives": comm["count"],
        "payload_bytes": comm["payload_bytes"],
        "predicted_payload_bytes": predicted_payload(cfg, state, n),
        "ring_bytes_per_device": comm["ring_bytes"],
        "memory_bytes_per_device": memory_per_device(compiled),
        "step_ms": seconds * 1e3,
    }


def table(rows) -> str:
    lines = [
        "| model | split | devices | collectives | bytes/step/device (ring) | HLO payload "
        "= predicted | memory/device | step (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = r["memory_bytes_per_device"]
        lines.append(
            f"| {r['model']} | {r['parallel']} | {r['devices']} | {r['collectives']} | "
            f"{r['ring_bytes_per_device'] / 1e6:.3f} MB | "
            f"{r['payload_bytes'] == r['predicted_payload_bytes']} | "
            f"{'n/a' if mem is None else f'{mem / 1e6:.1f} MB'} | {r['step_ms']:.2f} |"
        )
    return "\n".join(lines)


def figure(rows, path):
    fig, (ax_mem, ax_comm) = common.new_figure(1, 2, figsize=(10, 3.8))
    for label in dict.fromkeys(f"{r['model']} ({r['parallel']})" for r in rows):
        mine = [r for r in rows if f"{r['model']} ({r['parallel']})" == label]
        n = [r["devices"] for r in mine]
        ax_mem.plot(n, [(r["memory_bytes_per_device"] or 0) / 1e6 for r in mine], "o-", label=label)
        ax_comm.plot(n, [r["ring_bytes_per_device"] / 1e6 for r in mine], "o-", label=label)
    for ax, title in (
        (ax_mem, "compiled memory per device (MB)"),
        (ax_comm, "sent per step per device (MB, ring)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices (split n ways)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    common.save_figure(fig, path)


def report(rows, args, simulated):
    tp = {r["devices"]: r for r in rows if r["parallel"] == "model"}
    top = max(tp)
    shrink = tp[1]["memory_bytes_per_device"] / tp[top]["memory_bytes_per_device"]
    matched = sum(r["payload_bytes"] == r["predicted_payload_bytes"] for r in rows)
    dp_gpt = {r["devices"]: r for r in rows if r["model"] == "GPT MLP" and r["parallel"] == "data"}
    ratio = dp_gpt[top]["ring_bytes_per_device"] / max(tp[top]["ring_bytes_per_device"], 1)
    where = f"simulated CPU devices sharing {os.cpu_count()} cores" if simulated else "devices"
    notes = (
        f"{top} {where}: step times are bookkeeping, not speed-ups. Memory: arguments + "
        "outputs + temporaries of the step without buffer donation."
        + (
            f" Quick size: 16 tokens per sequence, {args.repeat} timing repeats."
            if args.quick
            else ""
        )
    )
    headline = [
        common.headline(
            "collective bytes in the compiled program = chain-rule count (configurations × splits)",
            f"{matched}/{len(rows)}",
            "all",
            matched == len(rows),
        ),
        common.headline(
            f"GPT MLP compiled memory per device, 1 device / {top}-way tensor split",
            round(shrink, 2),
            f"≤ {top}: W1, b1, W2 and their Adam moments split; LayerNorm, b2 "
            "and the (batch, tokens, width) activations stay whole",
        ),
        common.headline(
            f"GPT MLP bytes sent per device, data- / tensor-parallel, {top} devices",
            round(ratio, 1),
            "all gradients vs two activations (batch × tokens × width)",
        ),
    ]
    return common.report(
        "Scaling: data and tensor parallelism, bytes and memory per device",
        "python -m experiments.scaling",
        headline,
        ["scaling.png"],
        status="ok" if matched == len(rows) else "partial",
        notes=notes,
        size=common.run_size(args),
    )


def run(args):
    out = common.out_dir(args)
    simulated = jax.default_backend() == "cpu"
    splits = [n for n in args.splits if n <= len(jax.devices())]
    rows = []
    chosen = args.models.split(",")
    for cfg in [c for c in configs(args) if c["key"] in chosen]:
        for n in splits:
            rows.append(measure(cfg, n, args))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    figure(rows, out / "scaling.png")
    common.save_json(
        out / "scaling.json",
        {
            "rows": rows,
            "table": table(rows),
            "simulated_devices": simulated,
            "machine": common.machine(),
            "report": report(rows, args, simulated),
        },
    )
    return rows


def needs_simulated_devices(splits) -> bool:
    return jax.default_backend() == "cpu" and len(jax.devices()) < max(splits)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=None, help="timing repeats (median)")
    p.add_argument("--splits", default="1,2,4,8", help="device counts, e.g. 1,2,4,8")
    p.add_argument("--models", default="cnn,gpt", help="which of cnn,gpt to run")
    p.add_argument("--d-model", type=int, default=D_MODEL, help="GPT MLP width (768)")
    p.add_argument("--hidden", type=int, default=HIDDEN, help="GPT MLP hidden width (3072)")
    args = p.parse_args(argv)
    args.repeat = args.repeat or (2 if args.quick else 10)
    args.splits = [int(n) for n in args.splits.split(",")]
    if needs_simulated_devices(args.splits):
        if os.environ.get("JAXBP_SCALING_CHILD"):
            raise RuntimeError(f"scaling: {FLAG} did not give 8 devices: {jax.devices()}")
        # JAX fixes the device count at start-up: run again in a fresh process with the flag
        flags = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "XLA_FLAGS": flags, "JAXBP_SCALING_CHILD": "1", "PYTHONPATH": path}
        argv = sys.argv[1:] if argv is None else list(argv)
        cmd = [sys.executable, "-m", "experiments.scaling", *argv]
        subprocess.run(cmd, env=env, cwd=root, check=True)
        return None
    return run(args)


if __name__ == "__main__":
    main()
