"""SmolLM2 peak memory and wall time against length: chunked prefill with a KV cache vs one pass.

Claim (issue 13, item 2): scoring a document with ``token_nll(model, ids, prefill_chunk=N)`` (evaluate/nll.py)
holds the KV cache plus one chunk's activations, so its memory grows with the KV cache
(layers x 2 x kv_heads x head_dim x L x 4 bytes in float32), and its losses equal the one pass's.
The one pass beside it keeps no KV cache and holds one layer's activations at a time (results:
benchmarks/RESULTS.md, "long_context_memory.py").

Each (length, mode) runs in a fresh subprocess: it loads SmolLM2 (float32, CPU), tokenises the stdlib
corpus joined into one long text, warms up on 256 tokens, then records the RSS high-water mark
(``VmHWM`` of /proc/self/status; ``ru_maxrss`` elsewhere) before and after one ``token_nll`` call of
``L`` tokens. *extra* is the growth of the high-water mark over the call: what scoring ``L`` tokens
needed on top of the model, the tokens and the warm-up. The per-token NLL of every run is saved, and
where both modes ran at a length the largest difference between them is reported.

Check: between consecutive lengths the chunked run's extra memory may grow by at most the growth of the
KV cache plus what one chunk's attention adds per cached token (the ``[chunk, L]`` boolean mask and
SDPA's per-chunk buffers): ``growth / KV growth <= 1.5``.

    PYTHONPATH=src .venv/bin/python benchmarks/long_context_memory.py                      # 8k, 16k
    PYTHONPATH=src .venv/bin/python benchmarks/long_context_memory.py --lengths 32768,65536 --one-pass-max 0
    PYTHONPATH=src .venv/bin/python benchmarks/long_context_memory.py --json runs/mem.json  # rows as JSON

A 16k pass takes minutes on 2 CPU cores; 32k and 64k tens of minutes: run them in the background.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("chunked", "one-pass")
TARGET = 1.5  # extra-memory growth / KV-cache growth between consecutive lengths


def hwm_mib() -> float:
    """This process's RSS high-water mark in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def kv_cache_mib(config: object, length: int, bytes_per: int = 4) -> float:
    """layers x 2 (k, v) x kv_heads x head_dim x L x bytes, in MiB."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * 2 * kv_heads * head_dim * length * bytes_per / 2**20


def long_ids(tokenizer: object, length: int) -> list[int]:
    """The first ``length`` tokens of the stdlib corpus joined into one text."""
    from ropelab.data import load_corpus

    ids: list[int] = []
    for doc in load_corpus("stdlib"):
        ids += tokenizer(doc.text + "\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            return ids[:length]
    raise SystemExit(f"the stdlib corpus has only {len(ids)} tokens, fewer than {length}")


def child(length: int, mode: str, chunk: int, save: str, threads: int) -> dict:
    """One scoring call in this (fresh) process: memory, time, mean loss; the NLL saved to ``save``."""
    import torch

    torch.set_num_threads(threads)

    from ropelab.evaluate.nll import token_nll
    from ropelab.hf.load import load_model

    model, tokenizer = load_model("smollm2", dtype=torch.float32)
    model.eval()
    ids = torch.tensor([long_ids(tokenizer, length)])
    prefill = chunk if mode == "chunked" else None
    # warm-up (thread pools, kernels), the same in both modes: 256 tokens in chunks of 128
    token_nll(model, ids[:, :256], prefill_chunk=min(prefill or 256, 128))
    base = hwm_mib()
    start = time.perf_counter()
    nll = token_nll(model, ids, prefill_chunk=prefill)
    seconds = time.perf_counter() - start
    peak = hwm_mib()
    torch.save(nll, save)
    return {
        "length": length,
        "mode": mode,
        "chunk": prefill,
        "base_mib": round(base, 1),
        "peak_mib": round(peak, 1),
        "extra_mib": round(peak - base, 1),
        "kv_mib": round(kv_cache_mib(model.config, length), 1),
        "seconds": round(seconds, 1),
        "loss": float(nll.double().mean()),
        "threads": torch.get_num_threads(),
    }


def run_child(length: int, mode: str, chunk: int, save: Path, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--lengths", str(length), "--chunk", str(chunk)]
    command += ["--threads", str(threads)]
    done = subprocess.run([*command, "--save", str(save)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"length": length, "mode": mode, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_of(results: list[dict], nll_dir: Path, chunk: int) -> list[dict]:
    """One row per length: both modes side by side, the NLL difference, the growth check."""
    import torch

    by = {(r["length"], r["mode"]): r for r in results if "error" not in r}
    rows, prev = [], None
    for length in sorted({r["length"] for r in results}):
        c, o = by.get((length, "chunked")), by.get((length, "one-pass"))
        row = {"length": length, "chunk": chunk, "chunked": c, "one_pass": o, "max_abs_diff": None}
        if c and o:
            a, b = (torch.load(nll_dir / f"{length}-{m}.pt") for m in MODES)
            row["max_abs_diff"] = float((a - b).abs().max())
            row["mean_diff"] = abs(c["loss"] - o["loss"])
        if c and prev:
            growth = (c["extra_mib"] - prev["extra_mib"]) / (c["kv_mib"] - prev["kv_mib"])
            row["growth_over_kv"] = round(growth, 3)
            row["pass"] = growth <= TARGET
        prev = c or prev
        rows.append(row)
    return rows


def markdown(rows: list[dict], note: str) -> str:
    """The table for RESULTS.md."""
    lines = [
        note,
        "",
        "| L | KV cache MiB | chunked: extra MiB (peak) | chunked s | one pass: extra MiB (peak) "
        "| one pass s | max abs NLL diff | extra growth / KV growth | target | result |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        c, o = r["chunked"], r["one_pass"]
        if not (c or o):
            lines.append(f"| {r['length']} | - | failed | - | - | - | - | - | - | - |")
            continue
        kv = (c or o)["kv_mib"]
        cm = f"{c['extra_mib']:.0f} ({c['peak_mib']:.0f})" if c else "-"
        om = f"{o['extra_mib']:.0f} ({o['peak_mib']:.0f})" if o else "not run"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        growth = f"{r['growth_over_kv']:.2f}" if "growth_over_kv" in r else "-"
        verdict = "-" if "pass" not in r else ("pass" if r["pass"] else "miss")
        target = f"≤ {TARGET}" if "pass" in r else "-"
        lines.append(
            f"| {r['length']} | {kv:.0f} | {cm} | {c['seconds'] if c else '-'} | {om} | "
            f"{o['seconds'] if o else '-'} | {diff} | {growth} | {target} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="8192,16384", help="comma-separated token counts")
    parser.add_argument("--chunk", type=int, default=2048, help="prefill chunk (tokens)")
    parser.add_argument(
        "--one-pass-max", type=int, default=16384, help="also run one pass at lengths up to this (0: never)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)"
    )
    parser.add_argument("--json", help="write the rows here as JSON")
    parser.add_argument("--nll-dir", help="keep the per-token NLL files here (default: a temporary folder)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.child:
        print(json.dumps(child(lengths[0], args.child, args.chunk, args.save, args.threads)))
        return
    nll_dir = Path(args.nll_dir or tempfile.mkdtemp(prefix="long-context-"))
    nll_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for length in lengths:
        for mode in MODES:
            if mode == "one-pass" and length > args.one_pass_max:
                continue
            result = run_child(length, mode, args.chunk, nll_dir / f"{length}-{mode}.pt", args.threads)
            print(json.dumps(result), flush=True)
            results.append(result)
    rows = rows_of(results, nll_dir, args.chunk)
    note = (
        f"SmolLM2-135M, float32, CPU ({platform.machine()}, {results[0].get('threads', '?')} threads), "
        f"prefill chunk {args.chunk}; one fresh process per cell, 1 trial each; extra = growth of the RSS "
        "high-water mark over the scoring call (peak = the whole process)."
    )
    print(markdown(rows, note))
    if args.json:
        Path(args.json).write_text(json.dumps({"note": note, "rows": rows, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
