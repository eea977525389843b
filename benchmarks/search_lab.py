"""LongRoPE search on the lab's RoPE model (T = 128) at 4x and 16x against the best zero-shot methods.

    PYTHONPATH=src .venv/bin/python benchmarks/search_lab.py --out docs/search [--budget4 160 --budget16 80]

1. ``ropelab.search.search_lab`` at 4T and 16T (population 16, seed 0; resumable: a rerun into the same
   folder recomputes nothing), into ``OUT/lab_x4`` and ``OUT/lab_x16``.
2. The same-tokens loss (the lab's context view: each window's last T tokens given L of context) of the
   searched factors, of PI / NTK / YaRN / dynamic NTK as the lab applies them (factor s = L/T; dynamic with
   s following the length), on two sets of held-out windows: the 16 the search scored (the lab's own
   windows, so its committed rows in docs/lab/results.jsonl must agree) and 16 further windows of the same
   validation files that the search never saw (``eval_windows(..., 32)[16:]``).
   The searched factors against the best zero-shot method of each set: the paired bootstrap over windows
   of the difference (``ropelab.report.stats.paired_bootstrap_scores``: the same windows for both).
3. The searched factors with LongRoPE's n_hat (``unscaled_positions``) 4, 16 and 64 added, on both sets: a
   probe of whether leaving the first positions unscaled helps here (the search itself ran with n_hat 0).

Writes ``OUT/lab_summary.json`` and prints a markdown table. Not in the benchmark suite (minutes of CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ropelab.lab import Lab, LabConfig
from ropelab.report.stats import paired_bootstrap_scores
from ropelab.search import Candidate, SearchSettings, longrope_spec, search_lab

BASELINES = ("linear", "ntk", "yarn", "dynamic")


@torch.no_grad()
def window_losses(model, windows: torch.Tensor, target: int, trained: int) -> list[float]:
    """Per window: the mean NLL of its last ``trained`` tokens given ``target`` tokens of context (every
    window scores the same number of tokens, so the set's loss is the plain mean of these)."""
    total = windows.shape[1] - 1
    inputs, targets = windows[:, total - target : total], windows[:, total - target + 1 : total + 1]
    rows, out = max(1, 16384 // target), []
    for i in range(0, inputs.shape[0], rows):
        nll = model.token_nll(inputs[i : i + rows], targets[i : i + rows])[:, -trained:].double()
        out += nll.mean(dim=1).tolist()
    return out


def encoding_of(plain, label: str, target: int, trained: int, factors=None):
    """The lab's policy for the baselines (``ropelab.lab.methods``), or the searched longrope."""
    s = target / trained
    if label.startswith("searched"):
        n_hat = int(label.split("n_hat=")[1]) if "n_hat=" in label else 0
        params = dict(longrope_spec(Candidate(factors.factors, n_hat), scale=s).params)
        return plain.with_method("longrope", original_max_position_embeddings=trained, **params)
    if label in ("linear", "ntk"):
        return plain.with_method(label, factor=s)
    if label == "yarn":
        return plain.with_method("yarn", factor=s, original_max_position_embeddings=trained)
    return plain.with_method("dynamic", original_max_position_embeddings=trained)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/search"))
    ap.add_argument("--budget4", type=int, default=160)
    ap.add_argument("--budget16", type=int, default=80)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    summary: dict = {"targets": {}}
    lab = Lab(args.out / "lab_windows", LabConfig(eval_windows=32), progress=False)
    model, meta = lab.load("rope")
    trained = int(meta["train"]["length"])
    windows = lab.windows(trained)
    # the first 16 of 32 are the lab's own 16 windows (eval_windows takes them round-robin, in order)
    assert torch.equal(windows[:16], Lab(args.out / "lab_windows", progress=False).windows(trained))
    sets = {"searched windows (0-15)": windows[:16], "unseen windows (16-31)": windows[16:32]}
    plain = model.encoding
    for mult, budget in ((4, args.budget4), (16, args.budget16)):
        target = mult * trained
        settings = SearchSettings(population=args.population, budget=budget, seed=args.seed)
        t0 = time.perf_counter()
        run = search_lab(target=target, settings=settings, out=args.out / f"lab_x{mult}", progress=True)
        wall = time.perf_counter() - t0
        losses: dict[str, dict[str, float]] = {}
        per_window: dict[str, dict[str, list[float]]] = {}
        for name, wins in sets.items():
            for label in (*BASELINES, "searched", *(f"searched, n_hat={n}" for n in (4, 16, 64))):
                model.encoding = encoding_of(plain, label, target, trained, run.best)
                each = window_losses(model, wins, target, trained)
                per_window.setdefault(label, {})[name] = each
                losses.setdefault(label, {})[name] = sum(each) / len(each)
            model.encoding = plain
        paired = {}
        for name in sets:
            best = min(BASELINES, key=lambda label: losses[label][name])
            diff = paired_bootstrap_scores(per_window["searched"][name], per_window[best][name])
            paired[name] = {"against": best, **diff.to_dict(), "text": diff.text(4)}
        best_json = json.loads((args.out / f"lab_x{mult}" / "best.json").read_text())
        summary["targets"][str(target)] = {
            "multiple": mult,
            "evaluations": len(run.result.evaluated),
            "computed_now": run.result.computed,
            "search_wall_seconds_this_call": round(wall, 1),
            "population": args.population,
            "seed": args.seed,
            "seeds_as_longrope": run.result.seeds,
            "search_best": run.best_loss,
            "best_factors": list(run.best.factors),
            "best_by_generation": best_json["best_by_generation"],
            "same_tokens_loss": losses,
            "searched_minus_best_zero_shot": paired,
            "per_window": per_window,
        }
        print(f"\n### {mult}x ({target} tokens): {len(run.result.evaluated)} evaluations, seed {args.seed}")
        print("| method | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets))
        for label, by_set in losses.items():
            print(f"| {label} | " + " | ".join(f"{by_set[n]:.4f}" for n in sets) + " |")
        for name, p in paired.items():
            print(f"searched - {p['against']} on {name}: {p['text']}")
    (args.out / "lab_summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
