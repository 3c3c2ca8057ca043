"""``gatesum memory``: can a plain RNN, a GRU and an LSTM remember the start of a long document?

The recall task. A document opens with a key, a code word of ``key_length`` symbols out of
``key_symbols``, followed by L tokens of filler: real CNN/DailyMail text (``../shared/data``)
or random tokens. After the whole document has been read, the key must be reproduced from the
encoder's final hidden state alone. There is no attention: attention lets any RNN look back at
the key directly and would hide the very effect measured here. L is the lag.

Every cell gets the same budget per point (at most ``max_steps`` Adam steps and
``max_seconds``), stops early once it is solved (≥ 99% exact recall on a held-out batch) and
is scored on that held-out batch. A plain RNN's state is rewritten at every step, so the key
fades and the gradient from the end of the document vanishes before it reaches the start; the
gates of the GRU (update) and LSTM (forget, input) can hold it. Hochreiter & Schmidhuber
(1997, Table 4) expect the RNN at chance well before L = 100 and LSTM near 100% to L ≥ 1,000.

Gate initialization decides the outcome (see ``model/init.py``): with the usual biases a gated
cell starts out forgetting within a few steps, exactly like the RNN, and must find the long
memory by a gradient that has already vanished. Chrono initialization (the default) starts
the memory times spread up to the document length. Both are run and reported.

Outputs in ``--output-dir``: ``memory.json`` (every run, rewritten after each), ``memory.md``
(accuracy and steps-to-solve tables, cells × lags) and ``memory.png`` (accuracy against lag).
``gatesum memory trace`` plots a trained model's memory trace over one document.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import multiprocessing
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.errors import GatesumError
from gatesum.model.init import apply_gate_init
from gatesum.model.recurrent import Recurrent
from gatesum.training.data import DATA_DIR

Filler = Callable[[int, int, torch.Generator], Tensor]  # (batch, length, generator) -> (B, L) ids


@dataclass
class MemoryConfig:
    """One sweep: cells × lags × seeds × gate inits, each point under the same budget."""

    cells: tuple[str, ...] = ("rnn", "gru", "lstm")
    lags: tuple[int, ...] = (10, 30, 100, 300, 1000)
    seeds: int = 2
    default_init_lags: tuple[int, ...] = (30, 100)  # where gated cells also run "default"
    key_symbols: int = 8  # chance is 1 / key_symbols^key_length
    key_length: int = 1
    filler_vocab: int = 256
    embedding_size: int = 16
    hidden_size: int = 32
    batch_size: int = 32
    learning_rate: float = 1e-2  # 3e-3 left L = 300 unsolved in 300 steps (H = 32)
    max_steps: int = 400  # the budget per point, the same for every cell
    max_seconds: float = 240.0  # a safety cap per point; steps are the budget that counts
    eval_size: int = 256
    solved_accuracy: float = 0.99
    device: str = "cpu"


QUICK = MemoryConfig()
FULL = MemoryConfig(
    lags=(10, 20, 50, 100, 200, 500, 1000, 2000, 5000), seeds=5,
    default_init_lags=(10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    hidden_size=64, batch_size=64, max_steps=3000, max_seconds=1800.0, eval_size=1024,
)  # fmt: skip


# --- filler: what the key must be remembered across ---------------------------------------


def synthetic_filler(vocab_size: int) -> Filler:
    """Uniformly random filler tokens in [0, vocab_size)."""
    return lambda batch, length, generator: torch.randint(vocab_size, (batch, length), generator=generator)


def text_filler(data_dir: Path, vocab_size: int, max_articles: int = 2000) -> Filler:
    """Windows of real news text: the first ``max_articles`` CNN/DailyMail validation articles,
    words mapped to the ``vocab_size − 1`` most frequent ones plus an unknown-word id."""
    path = data_dir / "cnndm" / "validation.jsonl.gz"
    if not path.exists():
        raise GatesumError(f"no CNN/DailyMail data at {path}")
    words: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for _, line in zip(range(max_articles), lines):
            words.extend(json.loads(line)["article"].split())
    vocabulary = {word: i for i, (word, _) in enumerate(Counter(words).most_common(vocab_size - 1))}
    unknown = vocab_size - 1
    stream = torch.tensor([vocabulary.get(word, unknown) for word in words])

    def sample(batch: int, length: int, generator: torch.Generator) -> Tensor:
        if length >= len(stream):
            raise GatesumError(f"lag {length} is longer than the loaded text ({len(stream)} words)")
        starts = torch.randint(len(stream) - length, (batch, 1), generator=generator)
        return stream[starts + torch.arange(length)]  # (B, L)

    return sample


def recall_batch(config: MemoryConfig, filler: Filler, lag: int, batch: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:  # fmt: skip
    """tokens (B, key_length + lag), keys (B, key_length). Ids 0…key_symbols−1 are the key
    symbols, filler ids follow, so the key appears nowhere but at the start."""
    keys = torch.randint(config.key_symbols, (batch, config.key_length), generator=generator)
    tokens = torch.cat([keys, filler(batch, lag, generator) + config.key_symbols], 1)
    return tokens, keys


# --- the model: embedding → our encoder → readout from the final state -----------------------


class RecallModel(nn.Module):
    """Embedding + ``Recurrent`` encoder + a linear readout of the final hidden state.

    forward(tokens (B, T)) -> logits (B, key_length, key_symbols). No attention.
    """

    def __init__(self, config: MemoryConfig, cell: str) -> None:
        super().__init__()
        self.key_shape = (config.key_length, config.key_symbols)
        vocab_size = config.key_symbols + config.filler_vocab
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.encoder = Recurrent(cell, config.embedding_size, config.hidden_size)
        self.readout = nn.Linear(config.hidden_size, config.key_length * config.key_symbols)

    def forward(self, tokens: Tensor) -> Tensor:
        _, state = self.encoder(self.embedding(tokens))  # state: (L·D, B, H), or (h, C)
        final_hidden = (state[0] if isinstance(state, tuple) else state)[-1]  # (B, H)
        return self.readout(final_hidden).view(-1, *self.key_shape)


def recall_accuracy(logits: Tensor, keys: Tensor) -> tuple[float, float]:
    """(exact-key accuracy, per-symbol accuracy) of logits (B, k, K) against keys (B, k)."""
    correct = logits.argmax(-1) == keys
    return correct.all(-1).float().mean().item(), correct.float().mean().item()


# --- one point: a cell, an init, a lag, a seed ----------------------------------------------


def train_point(config: MemoryConfig, filler: Filler, cell: str, init: str, lag: int, seed: int) -> dict:
    """Train one recall model under the budget; returns its record (see the JSON output).

    The training stream and the held-out batch depend on (lag, seed) only, so every cell and
    init sees the same documents. Each batch is fresh, so the accuracy on a batch before the
    step that trains on it is an unbiased estimate; when it reaches the threshold, the
    held-out batch decides whether the point is solved.
    """
    torch.manual_seed(seed)
    model = RecallModel(config, cell).to(config.device)
    # chrono: memory times spread up to the document length, the longest lag this task needs
    apply_gate_init(model.encoder, init, max_lag=config.key_length + lag,
                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    stream = torch.Generator().manual_seed(1_000_003 * seed + lag)
    held_out = recall_batch(config, filler, lag, config.eval_size, torch.Generator().manual_seed(-1 - seed))
    held_tokens, held_keys = (tensor.to(config.device) for tensor in held_out)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in held_tokens.split(256)])
        model.train()
        return recall_accuracy(logits, held_keys)

    started, steps_to_solve, stopped_by, last_check = time.perf_counter(), None, "steps", -10
    for step in range(1, config.max_steps + 1):
        batch = recall_batch(config, filler, lag, config.batch_size, stream)
        tokens, keys = (tensor.to(config.device) for tensor in batch)
        logits = model(tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), keys.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # clipping tames the exploding gradients of RNNs
        optimizer.step()
        batch_accuracy, _ = recall_accuracy(logits.detach(), keys)
        if batch_accuracy >= config.solved_accuracy and step - last_check >= 10:
            last_check = step
            if evaluate()[0] >= config.solved_accuracy:
                steps_to_solve, stopped_by = step, "solved"
                break
        if time.perf_counter() - started > config.max_seconds:
            stopped_by = "seconds"
            break
    accuracy, symbol_accuracy = evaluate()
    return {
        "cell": cell, "init": init, "lag": lag, "seed": seed,
        "solved": steps_to_solve is not None, "steps_to_solve": steps_to_solve, "steps": step,
        "stopped_by": stopped_by, "seconds": round(time.perf_counter() - started, 2),
        "accuracy": accuracy, "symbol_accuracy": symbol_accuracy, "loss": loss.item(),
        "chance": config.key_symbols ** -config.key_length,
    }  # fmt: skip


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


FillerSpec = tuple  # ("synthetic", vocab_size) or ("text", data_dir, vocab_size): picklable


def make_filler(spec: FillerSpec) -> Filler:
    return synthetic_filler(spec[1]) if spec[0] == "synthetic" else text_filler(Path(spec[1]), spec[2])


_worker_state: dict = {}


def _start_worker(config: MemoryConfig, spec: FillerSpec, threads: int) -> None:
    torch.set_num_threads(threads)
    _worker_state.update(config=config, filler=make_filler(spec))


def _run_point(point: tuple[str, str, int, int]) -> dict:
    cpu_started = time.process_time()
    record = train_point(_worker_state["config"], _worker_state["filler"], *point)
    return {**record, "cpu_seconds": round(time.process_time() - cpu_started, 2)}


def run_sweep(config: MemoryConfig, spec: FillerSpec, filler_name: str, output_dir: Path,
              workers: int = 1, threads: int = 1) -> list[dict]:  # fmt: skip
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
            progress.set_postfix_str(f"{record['cell']} {record['init']} L={record['lag']} "
                                     f"acc={record['accuracy']:.2f}")  # fmt: skip
            seconds = round(time.perf_counter() - started, 1)
            meta = {"filler": filler_name, "workers": workers, "seconds": seconds}
            write_json(output_dir / "memory.json", config, meta, results)
    if workers > 1:
        pool.close()
        pool.join()
    return sorted(results, key=lambda r: (r["lag"], r["cell"], r["init"], r["seed"]))


# --- reports: JSON, Markdown, PNG ------------------------------------------------------------


def summarize(results: Sequence[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """(cell, init) -> lag -> accuracy mean/std over seeds, solved count, median steps to solve."""
    groups: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for record in results:
        groups.setdefault((record["cell"], record["init"]), {}).setdefault(record["lag"], []).append(record)
    summary: dict[tuple[str, str], dict[int, dict]] = {}
    for key, by_lag in groups.items():
        summary[key] = {}
        for lag, records in sorted(by_lag.items()):
            accuracies = [r["accuracy"] for r in records]
            solved_steps = [r["steps_to_solve"] for r in records if r["solved"]]
            summary[key][lag] = {
                "mean": statistics.fmean(accuracies),
                "std": statistics.pstdev(accuracies),
                "runs": len(records),
                "solved": len(solved_steps),
                "median_steps": statistics.median(solved_steps) if solved_steps else None,
            }
    return summary


def write_json(path: Path, config: MemoryConfig, meta: dict, results: Sequence[dict]) -> None:
    payload = {"config": dataclasses.asdict(config), **meta, "results": list(results)}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def _row_name(cell: str, init: str) -> str:
    return "rnn (no gates)" if cell == "rnn" else f"{cell}, {init} init"


def markdown_report(config: MemoryConfig, results: Sequence[dict], filler_name: str, seconds: float) -> str:
    """Two tables, cells × lags: held-out recall accuracy (mean ± std over seeds), and median
    steps to solve among the seeds that solved (with how many did)."""
    summary = summarize(results)
    lags = sorted({r["lag"] for r in results})
    header = "| cell | " + " | ".join(f"L = {lag:,}" for lag in lags) + " |"
    rule = "|---|" + "---:|" * len(lags)
    accuracy_rows, steps_rows = [], []
    for (cell, init), by_lag in sorted(summary.items()):
        accuracy_cells, steps_cells = [], []
        for lag in lags:
            point = by_lag.get(lag)
            if point is None:
                accuracy_cells.append("")
                steps_cells.append("")
                continue
            accuracy_cells.append(f"{point['mean']:.2f} ± {point['std']:.2f}")
            steps = "—" if point["median_steps"] is None else f"{point['median_steps']:g}"
            steps_cells.append(f"{steps} ({point['solved']}/{point['runs']})")
        accuracy_rows.append(f"| {_row_name(cell, init)} | " + " | ".join(accuracy_cells) + " |")
        steps_rows.append(f"| {_row_name(cell, init)} | " + " | ".join(steps_cells) + " |")
    chance = config.key_symbols**-config.key_length
    return "\n".join([
        "# Memory: recall a key across L tokens of filler",
        "",
        f"Key: {config.key_length} of {config.key_symbols} symbols at the start (chance {chance:.3f}); "
        f"filler: {filler_name}; readout from the final state, no attention. Hidden size "
        f"{config.hidden_size}, batch {config.batch_size}, Adam {config.learning_rate:g}; budget per point "
        f"{config.max_steps} steps (cap {config.max_seconds:g} s), stop at {config.solved_accuracy:.0%} "
        f"held-out recall; {config.seeds} seeds. Wall time {seconds / 60:.1f} min, CPU time "
        f"{sum(r.get('cpu_seconds', 0) for r in results) / 60:.1f} min.",
        "",
        "Chrono init (Tallec & Ollivier 2018) sets the gate biases so that an untrained cell's "
        "memory times spread up to the document length (LSTM b_f = log U(1, T−1), b_i = −b_f; "
        "GRU b_z = −log U(1, T−1)); the default init forgets within a few steps, so the gradient "
        "from the end of a long document never reaches its key.",
        "",
        "## Held-out recall accuracy (mean ± std over seeds)",
        "", header, rule, *accuracy_rows, "",
        "## Steps to solve (median over solved seeds; solved/runs)",
        "", header, rule, *steps_rows, "",
    ])  # fmt: skip


def plot_results(results: Sequence[dict], path: Path, chance: float) -> Path:
    """Accuracy against lag (log x), one colour per cell, dashed for the default init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green"}
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for (cell, init), by_lag in sorted(summarize(results).items()):
        lags = list(by_lag)
        dashed = init == "default" and cell != "rnn"
        axes.errorbar(lags, [by_lag[lag]["mean"] for lag in lags], yerr=[by_lag[lag]["std"] for lag in lags],
                      label=_row_name(cell, init), color=colours.get(cell), marker="o", capsize=3,
                      linestyle="--" if dashed else "-",
                      markerfacecolor="white" if dashed else None)  # fmt: skip
    axes.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.3f})")
    axes.set(xscale="log", xlabel="lag L (tokens between the key and the end)", ylim=(-0.02, 1.02),
             ylabel="held-out recall accuracy", title="Recall of a document's first token")  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves overlap at 1
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_trace(tokens: Sequence[str], retention: Sequence[float] | Tensor | Mapping[str, Sequence[float]],
               path: str | Path, title: str = "Memory trace") -> Path:  # fmt: skip
    """Plot retention per source position (one curve, or one per label of a mapping), with the
    tokens on the x axis when there are few enough to read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = retention if isinstance(retention, Mapping) else {"retention": retention}
    figure, axes = plt.subplots(figsize=(max(6.0, min(0.25 * len(tokens), 16.0)), 3.5))
    for label, values in curves.items():
        values = values.tolist() if isinstance(values, Tensor) else list(values)
        if len(values) != len(tokens):
            raise ValueError(f"{len(values)} retention values for {len(tokens)} tokens")
        axes.plot(range(len(values)), values, label=label, marker="." if len(values) <= 80 else None)
    if len(tokens) <= 80:
        axes.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    axes.set(xlabel="source position", ylabel="retention at the end", ylim=(-0.02, 1.05), title=title)
    if len(curves) > 1:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


# --- command line ------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CPU-sized sweep (under 10 min on 2 cores); without it, the full one",
    )
    parser.add_argument("--cells", type=lambda s: tuple(s.split(",")), help="comma-separated: rnn,gru,lstm")
    parser.add_argument("--lags", type=_ints, help="comma-separated lags L, e.g. 10,100,1000")
    parser.add_argument("--seeds", type=int, help="seeds per point")
    parser.add_argument(
        "--default-init-lags",
        type=_ints,
        help="lags where gated cells also run the default init (chrono always runs)",
    )
    parser.add_argument("--hidden-size", type=int, help="encoder hidden size H")
    parser.add_argument("--batch-size", type=int, help="documents per training step")
    parser.add_argument("--max-steps", type=int, help="step budget per point, the same for every cell")
    parser.add_argument("--max-seconds", type=float, help="safety cap in seconds per point")
    parser.add_argument("--key-length", type=int, help="symbols in the key code word")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"data folder with cnndm/ for real-text filler (default {DATA_DIR})",
    )
    parser.add_argument("--synthetic", action="store_true", help="random filler tokens instead of real text")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; small recurrent steps gain little from more",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="points trained in parallel processes (default 2 on CPU, 1 on GPU)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/memory"), help="where results go")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    trace = actions.add_parser("trace", help="plot a trained model's memory trace over one document")
    trace.add_argument("--model", type=Path, required=True, help="model bundle folder")
    trace.add_argument("--input", type=Path, required=True, help="a plain-text document")
    trace.add_argument("--output", type=Path, required=True, help="PNG to write")
    compare = actions.add_parser("compare", help="rnn/gru/lstm encoders on real summaries, attention on/off")
    from gatesum.experiments import compare_cells

    compare_cells.add_arguments(compare)


def config_from_args(args: argparse.Namespace) -> MemoryConfig:
    config = QUICK if args.quick else FULL
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(MemoryConfig)
                 if field.name != "device" and getattr(args, field.name, None) is not None}  # fmt: skip
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return dataclasses.replace(config, **overrides, device=device)


def choose_filler(args: argparse.Namespace, config: MemoryConfig) -> tuple[FillerSpec, str]:
    """Real text from ``--data`` (or ``DATA_DIR`` when it holds cnndm/), else random tokens."""
    data = args.data or DATA_DIR
    if args.synthetic or (args.data is None and not (data / "cnndm").exists()):
        return ("synthetic", config.filler_vocab), "random tokens"
    spec = ("text", str(data), config.filler_vocab)
    make_filler(spec)  # fail early, in this process
    return spec, f"CNN/DailyMail text, {config.filler_vocab}-word vocabulary"


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


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "trace":
        return run_trace(args)
    if getattr(args, "action", None) == "compare":
        from gatesum.experiments import compare_cells

        return compare_cells.run(args)
    config = config_from_args(args)
    if min(config.lags) < 1 or config.seeds < 1:
        raise GatesumError("lags and seeds must be positive")
    spec, filler_name = choose_filler(args, config)
    workers = args.workers or (1 if config.device != "cpu" else min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    results = run_sweep(config, spec, filler_name, args.output_dir, workers, args.threads)
    seconds = time.perf_counter() - started
    report = markdown_report(config, results, filler_name, seconds)
    (args.output_dir / "memory.md").write_text(report)
    plot_results(results, args.output_dir / "memory.png", chance=config.key_symbols**-config.key_length)
    print(report)
    print(f"wrote {args.output_dir}/memory.json, memory.md, memory.png in {seconds / 60:.1f} min")
    return 0
