"""``--batch-size`` for eval and passkey (issue 13, item 3): batched numbers equal batch-1 numbers, the
batch size is recorded in the rows but kept out of the resume key; device and dtype are in the resume key
of passkey and finetune rows (eval's: tests/test_resume_keys.py).

On the tiny saved LLaMA (float32, CPU).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer

from ropelab.cli import main
from ropelab.errors import RopeConfigError
from ropelab.evaluate.passkey import batches, greedy_continue_batch, prefix_cache, run_cell
from ropelab.evaluate.perplexity import last_sums_rows, prefix_sums_rows, sliding_sums_rows
from ropelab.hf import extend
from ropelab.report import read_jsonl

#: nats/token: batching reorders float sums, it must not change a number beyond this
TOL = 1e-5


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


IDS = torch.randint(0, 300, (3, 160), generator=torch.Generator().manual_seed(5))


def _close(a, b, tokens: int) -> bool:
    return abs(a - b) / tokens <= TOL


# the native route (rotation in the model) and an attention-level method (ropelab's attention function)
@pytest.mark.parametrize("method,params", [("yarn", {"factor": 2.0}), ("self-extend", {})])
def test_batched_cells_equal_one_document_at_a_time(model_and_tokenizer, method, params) -> None:
    model, _ = model_and_tokenizer
    extend(model, method, **params)
    try:
        for run in (
            lambda ids: prefix_sums_rows(model, ids, [32, 100, 160], dynamic=False),
            lambda ids: [{"s": s} for s in sliding_sums_rows(model, ids, 64, 48)],
            lambda ids: last_sums_rows(model, ids, [16, 64, 120], 40),
        ):
            together = run(IDS)
            alone = [run(IDS[i : i + 1])[0] for i in range(IDS.shape[0])]
            assert len(together) == len(alone) == 3
            for t, a in zip(together, alone, strict=True):
                assert t.keys() == a.keys()
                for cell in t:
                    assert t[cell].tokens == a[cell].tokens
                    assert _close(t[cell].nll, a[cell].nll, t[cell].tokens), (method, cell)
            assert together[0] != together[1]  # the rows are the documents, not one repeated
    finally:
        extend(model, "none")


def _eval_argv(model: Path, out: Path, *extra: str) -> list[str]:
    argv = ["eval", "--model", str(model), "--method", "none,self-extend", "--group", "2"]
    return [*argv, "--lengths", "32,64", "--docs", "3", "--quiet", "--out", str(out), *extra]


def test_eval_batch_size_same_numbers_recorded_not_keyed(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    assert main(_eval_argv(tiny_model_dir, one)) == 0
    assert main(_eval_argv(tiny_model_dir, three, "--batch-size", "3")) == 0
    rows1 = [r for r in read_jsonl(one / "results.jsonl") if r["command"] == "eval"]
    rows3 = [r for r in read_jsonl(three / "results.jsonl") if r["command"] == "eval"]
    assert len(rows1) == len(rows3) == 2 * 2 * 2
    for a, b in zip(rows1, rows3, strict=True):
        assert (a["key"], a["label"], a["metric"], a["length"]) == (
            b["key"],
            b["label"],
            b["metric"],
            b["length"],
        )
        assert abs(a["loss"] - b["loss"]) <= TOL and a["docs"] == b["docs"] == 3
        assert (a["batch_size"], b["batch_size"]) == (1, 3)
    units = list(read_jsonl(three / "doc_results.jsonl"))
    assert len(units) == 2 * 3 and {u["batch_size"] for u in units} == {3}
    # another batch size resumes the same folder: nothing recomputed, nothing appended
    assert main(_eval_argv(tiny_model_dir, three, "--batch-size", "2")) == 0
    assert len(list(read_jsonl(three / "doc_results.jsonl"))) == len(units)
    assert len(list(read_jsonl(three / "results.jsonl"))) == len(rows3)
    capsys.readouterr()


@pytest.mark.parametrize("method,params", [("yarn", {"factor": 2.0}), ("self-extend", {})])
def test_passkey_batched_trials_give_the_same_answers(model_and_tokenizer, method, params) -> None:
    model, tok = model_and_tokenizer
    extend(model, method, **params)
    try:
        alone = run_cell(model, tok, 224, 0.5, trials=4, seed=1)
        together = run_cell(model, tok, 224, 0.5, trials=4, seed=1, batch_size=3)  # batches of 3 and 1
        assert together == alone, method
        # the tokens themselves, not only the first number in them
        prompts = [[7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17, 18]]
        cache = prefix_cache(model, list(range(20, 80)))
        rows = greedy_continue_batch(model, cache, 60, prompts, 6)
        assert rows == [greedy_continue_batch(model, cache, 60, [p], 6)[0] for p in prompts]
    finally:
        extend(model, "none")


def test_passkey_batches_only_equal_lengths() -> None:
    rests = [[1] * 5, [1] * 6, [1] * 5, [1] * 5, [1] * 6]
    assert batches(rests, 2) == [[0, 2], [3], [1, 4]]
    assert batches(rests, 1) == [[0], [2], [3], [1], [4]]
    with pytest.raises(RopeConfigError, match="batch-size"):
        batches(rests, 0)
    with pytest.raises(RopeConfigError, match="one token length"):
        greedy_continue_batch(None, None, 0, [[1, 2], [3]], 1)


def test_passkey_batch_size_recorded_not_keyed(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["passkey", "--model", str(tiny_model_dir), "--lengths", "256", "--depths", "0.5"]
    argv += ["--trials", "3", "--quiet", "--out", str(tmp_path)]
    assert main([*argv, "--batch-size", "3"]) == 0
    (row,) = read_jsonl(tmp_path / "results.jsonl")
    assert row["batch_size"] == 3 and len(row["answers"]) == 3
    assert main(argv) == 0  # batch 1: the same key, nothing recomputed
    assert len(list(read_jsonl(tmp_path / "results.jsonl"))) == 1
    capsys.readouterr()


def _report_device(monkeypatch, module, device: str) -> None:
    """Make ``module``'s run context say ``device`` (what a run on that device records), the work
    staying on the CPU: the resume key must follow the context's device."""
    real = module.run_context
    monkeypatch.setattr(module, "run_context", lambda **kw: real(**{**kw, "device": device}))


def test_passkey_device_is_in_the_key(tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    grid = importlib.import_module("ropelab.evaluate.setup")  # where a loaded model builds its run context

    argv = ["passkey", "--model", str(tiny_model_dir), "--lengths", "256", "--depths", "0.5"]
    argv += ["--trials", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    with monkeypatch.context() as m:
        _report_device(m, grid, "cuda:0")
        assert main(argv) == 0
    assert main(argv) == 0  # back on the CPU: its row is reused
    rows = list(read_jsonl(tmp_path / "results.jsonl"))
    assert [r["device"] for r in rows] == ["cpu", "cuda:0"] and rows[0]["key"] != rows[1]["key"]
    capsys.readouterr()


def test_finetune_device_and_dtype_are_in_the_key(tmp_path: Path, monkeypatch) -> None:
    import ropelab.finetune.run as ft
    from ropelab.finetune import FinetuneConfig, run_finetune
    from ropelab.lab.finetune_target import load_lab_target

    common = dict(
        length=256, model="lab", method="linear", steps=1, batch=2, lr=5e-4, warmup=1, eval_windows=1
    )

    def run(out: Path, **kw) -> list[dict]:
        cfg = FinetuneConfig(**common, threads=1, **kw)
        run_finetune(cfg, out, load_lab_target(cfg.model, cfg.corpus), progress=False, log=lambda _: None)
        return list(read_jsonl(out / "results.jsonl"))

    cpu = run(tmp_path / "cpu")
    with monkeypatch.context() as m:
        _report_device(m, ft, "cuda:0")
        gpu = run(tmp_path / "gpu")
    bf16 = run(tmp_path / "bf16", precision="bf16")
    assert len(cpu) == len(gpu) == len(bf16) >= 2
    assert {r["device"] for r in cpu} == {"cpu"} and {r["device"] for r in gpu} == {"cuda:0"}
    assert {r["dtype"] for r in cpu} == {"float32"} and {r["dtype"] for r in bf16} == {"bfloat16"}
    keys = [{r["key"] for r in rows} for rows in (cpu, gpu, bf16)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2])
    assert [r["loss"] for r in cpu] == [r["loss"] for r in gpu]  # same work: only the key follows the device
