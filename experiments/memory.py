"""``gatesum memory``: can a plain RNN, a GRU and an LSTM remember the start of a long document?

The recall sweep (``experiments/recall.py`` holds the task and the training loop): for every
cell, lag L and seed, a model reads a key and L tokens of real text and must name the key from
its final state; each point under the same budget (at most ``max_steps`` Adam steps and
``max_seconds``), stopping early once solved (≥ 99% exact recall on a held-out batch). A plain
RNN's state is rewritten at every step, so the key fades and the gradient from the end of the
document vanishes before it reaches the start; the gates of the GRU (update) and LSTM (forget,
input) can hold it. Hochreiter & Schmidhuber (1997, Table 4) expect the RNN at chance well
before L = 100 and LSTM near 100% to L ≥ 1,000.

Gate initialization decides the outcome (see ``model/init.py``): with the usual biases a gated
cell starts out forgetting within a few steps, exactly like the RNN, and must find the long
memory by a gradient that has already vanished. Chrono initialization (the default) starts
the memory times spread up to the document length. Both are run and reported.

Outputs in ``--output-dir``: ``memory.json`` (every run, rewritten after each), ``memory.md``
(accuracy and steps-to-solve tables, cells × lags) and ``memory.png`` (accuracy against lag),
each naming the command that made it. Actions: ``trace`` plots a trained model's memory trace
over one document; ``compare`` trains summarizers per encoder cell; ``ship`` trains the recall
models that ship with the package (``experiments/ship.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from gatesum.experiments.memory_report import markdown_report, plot_results, plot_trace, write_json
from gatesum.experiments.recall import FillerSpec, MemoryConfig, make_filler, train_point
from gatesum.model.errors import GatesumError
from gatesum.model.recall import CELL_NAMES
from gatesum.training.data import DATA_DIR

QUICK = MemoryConfig()
FULL = MemoryConfig(
    lags=(10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    seeds=5,
    default_init_lags=(10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    hidden_size=64,
    batch_size=64,
    max_steps=3000,
    max_seconds=1800.0,
    eval_size=1024,
)


def sweep_points(config: MemoryConfig) -> list[tuple[str, str, int, int]]:
    """(cell, init, lag, seed) for every run, shortest lags first. A plain RNN has no gates,
    so it runs once per point, under its only (default) initialization."""
    points = []
    for lag in sorted(config.lags):
        for cell in config.cells:
            inits = ["default"] if cell == "rnn" else ["chrono"]
            if cell != "rnn" and lag in config.default_init_lags:
                inits.append("default")
            points += [(cell, init, lag, seed) for init in inits for seed in range(config.seeds)]
    return points


_worker_state: dict = {}


def _start_worker(config: MemoryConfig, spec: FillerSpec, threads: int) -> None:
    torch.set_num_threads(threads)
    _worker_state.update(config=config, filler=make_filler(spec))


def _run_point(point: tuple[str, str, int, int]) -> dict:
    cpu_started = time.process_time()
    record = train_point(_worker_state["config"], _worker_state["filler"], *point)
    return {**record, "cpu_seconds": round(time.process_time() - cpu_started, 2)}


def run_sweep(
    config: MemoryConfig,
    spec: FillerSpec,
    filler_name: str,
    output_dir: Path,
    workers: int = 1,
    threads: int = 1,
    command: str = "",
) -> list[dict]:
    """Every point of the sweep, in ``workers`` processes; the JSON is rewritten after each
    point so a long run can be read early. One worker runs the shortest lags first; several
    take the longest first, which packs the points onto the workers best."""
    from tqdm import tqdm

    output_dir.mkdir(parents=True, exist_ok=True)
    points = sweep_points(config)
    results: list[dict] = []
    started = time.perf_counter()
    if workers <= 1:
        _start_worker(config, spec, threads)
        records = map(_run_point, points)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, (config, spec, threads))
        records = pool.imap_unordered(_run_point, sorted(points, key=lambda p: -p[2]))
    with tqdm(records, total=len(points), desc="memory", unit="run") as progress:
        for record in progress:
            results.append(record)
            progress.set_postfix_str(
                f"{record['cell']} {record['init']} L={record['lag']} acc={record['accuracy']:.2f}"
            )
            seconds = round(time.perf_counter() - started, 1)
            meta = {"command": command, "filler": filler_name, "workers": workers, "seconds": seconds}
            write_json(output_dir / "memory.json", config, meta, results)
    if workers > 1:
        pool.close()
        pool.join()
    return sorted(results, key=lambda r: (r["lag"], r["cell"], r["init"], r["seed"]))


# --- command line ------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _cells(text: str) -> tuple[str, ...]:
    cells = tuple(text.split(","))
    if not set(cells) <= set(CELL_NAMES):
        raise argparse.ArgumentTypeError(f"cells must be among {','.join(CELL_NAMES)}")
    return cells


def _add_shared(parser: argparse.ArgumentParser, default) -> None:
    """Flags of the sweep that ``ship`` takes too (``default=SUPPRESS`` there, so that a flag
    given before the action is not overwritten by the action's default)."""
    parser.add_argument(
        "--cells", type=_cells, default=default, help=f"comma-separated: {','.join(CELL_NAMES)}"
    )
    parser.add_argument("--hidden-size", type=int, default=default, help="encoder hidden size H")
    parser.add_argument("--batch-size", type=int, default=default, help="documents per training step")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=default,
        help="step budget per point (per model for ship), the same for every cell",
    )
    parser.add_argument("--max-seconds", type=float, default=default, help="safety cap in seconds per point")
    parser.add_argument(
        "--data",
        type=Path,
        default=default,
        help=f"data folder with cnndm/ for real-text filler (default {DATA_DIR})",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        default=default or False,
        help="random filler tokens instead of real text",
    )
    parser.add_argument("--device", default=default, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=default or 1,
        help="torch CPU threads per worker; small recurrent steps gain little from more",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default,
        help="runs trained in parallel processes (default 2 on CPU, 1 on GPU)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CPU-sized sweep (under 10 min on 2 cores); without it, the full one",
    )
    _add_shared(parser, None)
    parser.add_argument("--lags", type=_ints, help="comma-separated lags L, e.g. 10,100,1000")
    parser.add_argument("--seeds", type=int, help="seeds per point")
    parser.add_argument(
        "--default-init-lags",
        type=_ints,
        help="lags where gated cells also run the default init (chrono always runs)",
    )
    parser.add_argument("--key-length", type=int, help="symbols in the key code word")
    parser.add_argument(
        "--final-only",
        action="store_true",
        help="train on the final state's readout only (default: the readout after every token)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/memory"), help="where results go")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    trace = actions.add_parser("trace", help="plot a trained model's memory trace over one document")
    trace.add_argument("--model", type=Path, required=True, help="model bundle folder")
    trace.add_argument("--input", type=Path, required=True, help="a plain-text document")
    trace.add_argument("--output", type=Path, required=True, help="PNG to write")
    compare = actions.add_parser("compare", help="rnn/gru/lstm encoders on real summaries, attention on/off")
    from gatesum.experiments import compare_cells, ship

    compare_cells.add_arguments(compare)
    shipping = actions.add_parser("ship", help="train the recall models that ship, one per cell")
    ship.add_arguments(shipping)
    _add_shared(shipping, argparse.SUPPRESS)


def _device(args: argparse.Namespace) -> str:
    return getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")


def _workers(args: argparse.Namespace, device: str) -> int:
    return getattr(args, "workers", None) or (1 if device != "cpu" else min(2, os.cpu_count() or 1))


def config_from_args(args: argparse.Namespace, base: MemoryConfig) -> MemoryConfig:
    """``base`` with every field that a flag of the same name sets (and the device)."""
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(base)
        if field.name != "device" and getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(base, **overrides, device=_device(args))


def choose_filler(args: argparse.Namespace, config: MemoryConfig) -> tuple[FillerSpec, str]:
    """Real text from ``--data`` (or ``DATA_DIR`` when it holds cnndm/), else random tokens."""
    given = getattr(args, "data", None)
    data = given or DATA_DIR
    if getattr(args, "synthetic", False) or (given is None and not (data / "cnndm").exists()):
        return ("synthetic", config.filler_vocab), "random tokens"
    spec = ("text", str(data), config.filler_vocab)
    return spec, make_filler(spec).name  # fail early, in this process


def command_line() -> str:
    """The command that is running, as a user would type it (results name what made them)."""
    return shlex.join(["gatesum", *sys.argv[1:]])


def run_trace(args: argparse.Namespace) -> int:
    """Draw a bundle's memory trace over the document in ``--input``."""
    from gatesum.model.bundle import load_bundle
    from gatesum.model.pipeline import encode_sources, source_memory_trace

    bundle = load_bundle(args.model)
    try:
        text = args.input.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GatesumError(f"{args.input}: cannot read the document ({error})") from None
    if not text.strip():
        raise GatesumError(f"{args.input}: the document is empty")
    (source_ids,), _ = encode_sources(bundle, [text])
    retention = source_memory_trace(bundle, source_ids)
    tokens = bundle.tokenizer.id_to_piece(source_ids)
    cell = bundle.model.config.encoder_cell
    plot_trace(tokens, retention, args.output, title=f"Memory trace of {bundle.name} ({cell} encoder)")
    print(
        f"wrote {args.output}: {len(tokens)} source tokens, retention of the first "
        f"{retention[0]:.3g}, median {sorted(retention)[len(retention) // 2]:.3g}"
    )
    return 0


def run_ship(args: argparse.Namespace) -> int:
    """Train one recall model per cell and write them, their card and the results."""
    from gatesum.experiments.recall import TOKENIZER
    from gatesum.experiments.ship import ShipConfig, run_ship, ship_table
    from gatesum.model.tokenizer import Tokenizer

    config = config_from_args(args, ShipConfig())
    if config.train_length < 1 or config.max_steps < 1 or min(config.eval_lags) < 1:
        raise GatesumError("train length, steps and lags must be positive")
    spec, filler_name = choose_filler(args, config)
    tokenizer = Tokenizer.load(TOKENIZER) if spec[0] == "text" else None
    device = config.device
    models = run_ship(
        config,
        spec,
        filler_name,
        args.output,
        args.report,
        _workers(args, device),
        args.threads,
        command_line(),
        tokenizer,
    )
    print(ship_table(config, models))
    print(
        f"wrote {len(models)} models and README.md to {args.output}, results to {args.report}.json/.md/.png"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "action", None)
    if action == "trace":
        return run_trace(args)
    if action == "ship":
        return run_ship(args)
    if action == "compare":
        from gatesum.experiments import compare_cells

        return compare_cells.run(args)
    config = config_from_args(args, QUICK if args.quick else FULL)
    config = dataclasses.replace(config, every_position=not args.final_only)
    if min(config.lags) < 1 or config.seeds < 1:
        raise GatesumError("lags and seeds must be positive")
    spec, filler_name = choose_filler(args, config)
    command = command_line()
    started = time.perf_counter()
    results = run_sweep(
        config, spec, filler_name, args.output_dir, _workers(args, config.device), args.threads, command
    )
    seconds = time.perf_counter() - started
    report = markdown_report(config, results, filler_name, seconds, command)
    (args.output_dir / "memory.md").write_text(report)
    plot_results(results, args.output_dir / "memory.png", config.key_symbols**-config.key_length, command)
    print(report)
    print(f"wrote {args.output_dir}/memory.json, memory.md, memory.png in {seconds / 60:.1f} min")
    return 0
