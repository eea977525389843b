"""The steps of `benchmarks/gpu.sh` (one NVIDIA GPU; run that script, not this one alone).

Triton rotation against a device copy, attention methods against native RoPE at 32k, and the GPU section
of RESULTS.md.

Not in ``make bench`` (it needs CUDA); ``benchmarks/gpu.sh`` runs every step with a timeout and writes the
section. Steps (each writes a JSON file of rows; ``report`` turns a folder of them into the section):

* ``rotary``: ``apply_rotary`` with the Triton kernel (what ``backend="auto"`` picks on CUDA tensors) against
  a plain device copy of the same q and k (``clone``: the same bytes read and written), bf16 and fp32, the
  half layout on ``[b, h, s, d]``; the kernel's output is checked to equal the torch path bit for bit first.
  Reported: time ratio kernel / copy (target <= 1.5x) and the kernel's bandwidth as a fraction of the copy's.
  Timed with CUDA events, variants interleaved, median of the rounds.
* ``model MODEL``: one forward (``ropelab.evaluate.nll.token_nll``) at 32k with ``none``, ``self-extend``
  and ``rerope+log-n``, interleaved rounds: time ratio against ``none`` (issue 13's target <= 1.5x) and
  peak GPU memory; with real weights, the loss of each.
* ``prepare``: the model and corpus folders ``gpu.sh`` uses when SmolLM2's weights are not here (a bare
  GPU machine has no network): SmolLM2-135M's architecture with random weights (timings and memory do not
  depend on the weights; losses are then meaningless and not reported) and a byte-level BPE tokenizer
  trained on the stdlib corpus; and one long document (stdlib files joined) for ``eval`` and ``finetune``.
* ``report DIR``: the ``## GPU`` section of ``benchmarks/RESULTS.md`` from the rows in DIR (replaced in
  place; ``run_all.py`` keeps it).

    python benchmarks/gpu_bench.py rotary --json rows/rotary.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTION = "GPU (`benchmarks/gpu.sh`)"

#: SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json: LLaMA, 30 layers, 9 query / 3 key-value heads)
SMOLLM2_SHAPE = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}


def _cuda_times(variants: dict[str, Any], rounds: int, inner: int) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``rounds`` rounds, variants interleaved (rotating start), each
    timed over ``inner`` calls with CUDA events."""
    import torch

    names = list(variants)
    for name in names:  # warm-up (Triton compiles here)
        variants[name]()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                variants[name]()
            stop.record()
            stop.synchronize()
            times[name].append(start.elapsed_time(stop) / 1e3 / inner)
    return times


def _median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def rotary_rows() -> list[dict[str, Any]]:
    import torch

    from ropelab import Rope, apply_rotary
    from ropelab.rope.apply import _kernel_backend

    rows = []
    b, hq, hk, s, d = 4, 32, 8, 32768, 128
    rope = Rope("default", head_dim=d, base=10000.0)
    for dtype in (torch.bfloat16, torch.float32):
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(b, hq, s, d, device="cuda", dtype=dtype, generator=g)
        k = torch.randn(b, hk, s, d, device="cuda", dtype=dtype, generator=g)
        cos, sin = rope.cos_sin(torch.arange(s, device="cuda"), dtype=torch.float32)
        picked = _kernel_backend("auto", q, cos, sin, inplace=False)
        fused = apply_rotary(q, k, cos, sin)  # auto
        ref = apply_rotary(q, k, cos, sin, backend="torch")
        same = all(torch.equal(x, y) for x, y in zip(fused, ref, strict=True))
        variants = {
            "kernel": lambda q=q, k=k, c=cos, sn=sin: apply_rotary(q, k, c, sn),
            "torch": lambda q=q, k=k, c=cos, sn=sin: apply_rotary(q, k, c, sn, backend="torch"),
            "copy": lambda q=q, k=k: (q.clone(), k.clone()),
        }
        times = _cuda_times(variants, rounds=7, inner=10)
        moved = 2 * (q.nbytes + k.nbytes)  # read and written once each
        name = str(dtype).removeprefix("torch.")
        shapes = f"q [{b},{hq},{s},{d}], k [{b},{hk},{s},{d}] {name}"
        ratio = _median_ratio(times, "kernel", "copy")
        kernel_s, copy_s = statistics.median(times["kernel"]), statistics.median(times["copy"])
        rows.append(
            {
                "step": "rotary",
                "config": f"{name}, auto picks {picked!r}, bit-identical to torch path: {same}",
                "ratio": ratio,
                "target": "<= 1.5",
                "pass": bool(same and picked == "triton" and ratio <= 1.5),
                "shapes": shapes,
                "detail": f"kernel {kernel_s * 1e3:.3f} ms ({moved / kernel_s / 1e12:.2f} TB/s, "
                f"{copy_s / kernel_s:.0%} of the copy's bandwidth); copy {copy_s * 1e3:.3f} ms "
                f"({moved / copy_s / 1e12:.2f} TB/s); "
                f"torch path {statistics.median(times['torch']) * 1e3:.3f} ms; "
                f"7 rounds x 10 calls",
            }
        )
    return rows


def long_ids(tokenizer: Any, n: int) -> Any:
    """``[1, n]`` token ids of the stdlib corpus's documents joined (the same text for every method)."""
    import torch

    from ropelab.data import load_corpus

    ids: list[int] = []
    for doc in sorted(load_corpus("stdlib"), key=lambda d: -len(d.text)):
        ids += tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            break
    if len(ids) < n:
        raise SystemExit(f"the stdlib corpus has only {len(ids)} tokens; need {n}")
    return torch.tensor([ids[:n]])


def model_rows(
    model_name: str,
    real: bool,
    length: int,
    rounds: int,
    device: str = "cuda",
    budget: float = float("inf"),
    save: Any = None,
) -> list[dict[str, Any]]:
    """One forward per method and round; ``rounds`` cut to what fits ``budget`` seconds (the first timed
    forwards, warm-ups included, when not even one round fits). ``save(rows)``, if given, gets the rows of
    the warm-up forwards as soon as they exist (what a timeout of the step leaves)."""
    began = time.perf_counter()
    import torch

    from ropelab.evaluate.nll import token_nll
    from ropelab.hf import extend
    from ropelab.hf.load import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(model_name, dtype=torch.bfloat16, device=device)
    load_s = time.perf_counter() - t0
    ids = long_ids(tokenizer, length).to(device)
    cuda = device.startswith("cuda")
    methods = ["none", "self-extend", "rerope+log-n"]
    peaks: dict[str, float] = {}
    losses: dict[str, float] = {}

    def forward(method: str) -> float:
        """Seconds of one forward with ``method`` (the extension applied outside the timing)."""
        extend(model, method)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        nll = token_nll(model, ids)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peaks[method] = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        losses[method] = float(nll.double().mean())
        return seconds

    def build(times: dict[str, list[float]], timed: str) -> list[dict[str, Any]]:
        rows = []
        for m in methods[1:]:
            ratio = _median_ratio(times, m, "none")
            loss = f"; loss {losses[m]:.4f} vs none {losses['none']:.4f} nats/token" if real else ""
            rows.append(
                {
                    "step": "attention",
                    "config": f"{m} / none, one forward at {length} tokens",
                    "ratio": ratio,
                    "target": "<= 1.5",
                    "pass": ratio <= 1.5,
                    "shapes": f"{'SmolLM2-135M' if real else 'SmolLM2-135M shape, random weights'}, bf16, "
                    f"[1, {length}]",
                    "detail": f"{m} {statistics.median(times[m]):.2f} s, "
                    f"none {statistics.median(times['none']):.2f} s ({timed}); peak GPU memory "
                    f"{peaks[m]:.1f} GiB vs {peaks['none']:.1f} GiB{loss}; model loaded in {load_s:.0f} s",
                }
            )
        return rows

    warm = {m: forward(m) for m in methods}  # warm-up (kernels, compilation)
    print("warm-up: " + ", ".join(f"{m} {t:.2f} s" for m, t in warm.items()), flush=True)
    if save is not None:  # what a timeout leaves: the warm-up forwards
        save(build({m: [t] for m, t in warm.items()}, "the warm-up forward only"))
    left = budget - (time.perf_counter() - began)
    if left < float("inf"):
        rounds = max(0, min(rounds, int(left // (1.2 * sum(warm.values())))))
    if rounds == 0:  # not one more round fits
        extend(model, "none")
        return build({m: [t] for m, t in warm.items()}, "the warm-up forward only")
    times: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(rounds):
        k = i % len(methods)
        for m in methods[k:] + methods[:k]:
            times[m].append(forward(m))
    extend(model, "none")
    return build(times, f"median of {rounds} rounds after a warm-up")


def prepare(folder: Path, random_model: bool) -> None:
    """A one-document corpus and, with ``random_model``, a SmolLM2-shaped random model with a BPE
    tokenizer trained on the stdlib corpus."""
    import logging

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from ropelab.data import load_corpus, stdlib_files

    corpus = folder / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    docs = sorted(load_corpus("stdlib"), key=lambda d: -len(d.text))[:40]
    (corpus / "stdlib-joined.txt").write_text("\n\n".join(d.text for d in docs))
    if not random_model:
        return
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    tok.train_from_iterator([p.read_text(errors="replace") for p in stdlib_files()[:60]], trainer)
    config = AutoConfig.for_model("llama", **SMOLLM2_SHAPE, eos_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model_dir = folder / "smollm2-random"
    model.save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(model_dir)


def collect(kind: str, folder: Path, real: bool) -> list[dict[str, Any]]:
    """The rows of an ``eval`` or ``finetune`` run folder, as the section shows them (losses only with real
    weights)."""
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for r in rows:
        if kind == "eval" and r.get("command") == "eval" and r.get("metric") == "prefix":
            out.append(
                {
                    "method": r["label"],
                    "length": r["length"],
                    "loss (nats/token)": f"{r['loss']:.4f}" if real else "- (random weights)",
                    "tokens": r["tokens"],
                    "device": r["device"],
                    "dtype": r["dtype"],
                }
            )
        elif kind == "finetune" and r.get("kind") == "final":
            out.append(
                {
                    "method": r.get("label"),
                    "length": r.get("length"),
                    "steps": r.get("step"),
                    "tokens/s (median over steps)": f"{r['tokens_per_s']:.0f}",
                    "held-out loss": f"{r['loss']:.4f}" if real and r.get("loss") is not None else "-",
                    "device": r["device"],
                    "dtype": r["dtype"],
                }
            )
    if not out:
        raise SystemExit(f"no {kind} rows in {folder / 'results.jsonl'}")
    return out


def write_section(rows_dir: Path, results: Path, note: str) -> str:
    """Render the rows in ``rows_dir`` (``*.json``: lists of rows) and the step log (``steps.tsv``: step,
    seconds, status) as the GPU section; put it into ``results`` in place of the old one."""
    sys.path.insert(0, str(HERE))
    from run_all import keep_sections

    lines = [f"## {SECTION}", "", note, ""]
    steps = rows_dir / "steps.tsv"
    if steps.exists():
        lines += ["| step | seconds | status |", "|---|---:|---|"]
        for line in steps.read_text().splitlines():
            step, seconds, status = [*line.split("\t"), "", ""][:3]
            lines.append(f"| {step} | {seconds} | {status} |")
        lines.append("")
    for path in sorted(rows_dir.glob("*.json")):
        rows = json.loads(path.read_text())
        if not rows:
            continue
        lines += [f"### {path.stem}", ""]
        if "ratio" in rows[0]:
            lines += ["| config | ratio (median) | target | result | shapes |", "|---|---:|---|---|---|"]
            for r in rows:
                verdict = "-" if r.get("pass") is None else ("pass" if r["pass"] else "**miss**")
                target = (r.get("target") or "-").replace("<=", "≤").replace(">=", "≥")
                lines.append(f"| {r['config']} | {r['ratio']:.2f}x | {target} | {verdict} | {r['shapes']} |")
            lines += ["", *(f"- {r['config']}: {r['detail']}" for r in rows if r.get("detail"))]
        else:
            keys = list(rows[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
        lines.append("")
    section = "\n".join(lines).rstrip("\n") + "\n"
    old = results.read_text() if results.exists() else "# Benchmark results\n\n"
    results.write_text(keep_sections(old, old + "\n" + section))  # the old file with this section
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("rotary")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("model")
    p.add_argument("model")
    p.add_argument("--random-weights", action="store_true", help="timings and memory only (no losses)")
    p.add_argument("--length", type=int, default=32768)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds for the whole step")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("prepare")
    p.add_argument("folder", type=Path)
    p.add_argument("--random-weights", action="store_true", help="also the random SmolLM2-shaped model")
    p = sub.add_parser("collect")
    p.add_argument("kind", choices=("eval", "finetune"))
    p.add_argument("folder", type=Path)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("rows", type=Path)
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--note", default="")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.folder, args.random_weights)
        return
    if args.step == "collect":
        args.json.write_text(json.dumps(collect(args.kind, args.folder, not args.random_weights), indent=1))
        return
    if args.step == "report":
        note = args.note or f"Written by `benchmarks/gpu.sh` on {dt.date.today().isoformat()}."
        print(write_section(args.rows, args.results, note))
        return
    rows = (
        rotary_rows()
        if args.step == "rotary"
        else model_rows(args.model, not args.random_weights, args.length, args.rounds)
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['config']}: {r['ratio']:.2f}x ({r['detail']})")


if __name__ == "__main__":
    main()
