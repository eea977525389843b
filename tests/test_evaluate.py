"""Perplexity protocols, passkey prompts, corpora and the eval/passkey commands on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer

from ropelab import RopeConfigError
from ropelab.cli import main
from ropelab.data import load_corpus
from ropelab.evaluate.nll import token_nll
from ropelab.evaluate.passkey import build_prompt, first_number, run_cell
from ropelab.evaluate.perplexity import Sums, aggregate, last_sums, prefix_sums, sliding_sums
from ropelab.hf import extend
from ropelab.report import read_jsonl


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


IDS = torch.randint(0, 300, (1, 200), generator=torch.Generator().manual_seed(3))


def test_token_nll_equals_full_logits(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    ours = token_nll(model, IDS, chunk=37)
    with torch.no_grad():
        logits = model(IDS).logits
    ref = F.cross_entropy(logits[0, :-1], IDS[0, 1:], reduction="none")
    torch.testing.assert_close(ours[0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "method,params", [("none", {}), ("yarn", {"factor": 4.0}), ("ntk-mixed", {"factor": 2.0})]
)
def test_one_pass_serves_every_length_for_static_methods(model_and_tokenizer, method, params) -> None:
    model, _ = model_and_tokenizer
    extend(model, method, **params)
    lengths = [16, 50, 128, 200]
    shared = prefix_sums(model, IDS, lengths, dynamic=False)
    separate = prefix_sums(model, IDS, lengths, dynamic=True)  # one pass per length
    extend(model, "none")
    for key in shared:
        assert shared[key].tokens == separate[key].tokens
        assert math.isclose(shared[key].nll, separate[key].nll, rel_tol=1e-5), key
    assert shared["prefix:200"].tokens == 199 and shared["band:128"].tokens == 78


def test_dynamic_methods_get_a_pass_per_length(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    extend(model, "dynamic", factor=4.0)
    shared = prefix_sums(model, IDS, [64, 200], dynamic=False)
    separate = prefix_sums(model, IDS, [64, 200], dynamic=True)
    extend(model, "none")
    # at 64 the model is inside its trained length only when evaluated on its own
    assert not math.isclose(shared["prefix:64"].nll, separate["prefix:64"].nll, rel_tol=1e-6)
    assert math.isclose(shared["prefix:200"].nll, separate["prefix:200"].nll, rel_tol=1e-6)


def test_sliding_scores_each_token_once_and_matches_full_window(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    full = token_nll(model, IDS)[0]
    whole = sliding_sums(model, IDS, length=200, stride=50)
    assert whole.tokens == 199 and math.isclose(whole.nll, float(full.double().sum()), rel_tol=1e-6)
    windows = sliding_sums(model, IDS, length=64, stride=32)
    assert windows.tokens == 199


def test_last_tokens_protocol(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    cells = last_sums(model, IDS, [16, 64, 150], score_last=50)
    assert set(cells) == {"last:16", "last:64", "last:150"}
    assert all(c.tokens == 50 for c in cells.values())
    end = 150 + 50
    ref = token_nll(model, IDS[:, end - 50 - 64 : end])[0][-50:]
    assert math.isclose(cells["last:64"].nll, float(ref.double().sum()), rel_tol=1e-6)


def test_aggregate_is_token_weighted_with_bootstrap_interval() -> None:
    cells = [Sums(10.0, 10), Sums(30.0, 10), Sums(20.0, 20)]
    stat = aggregate(cells, resamples=500)
    assert stat.loss == pytest.approx(60.0 / 40) and stat.tokens == 40 and stat.docs == 3
    assert stat.low <= stat.loss <= stat.high and stat.low < stat.high
    one, two = aggregate([Sums(3.0, 3)]), aggregate([Sums(3.0, 3), Sums(1.0, 1)])
    assert (one.loss, one.low, one.high, two.low, two.high) == (1.0, None, None, None, None)  # below 3 docs


def test_passkey_prompt(model_and_tokenizer) -> None:
    _, tok = model_and_tokenizer
    for depth in (0.0, 0.5, 1.0):
        p = build_prompt(tok, 300, depth, 12345)
        text = tok.decode(p.prefix + p.rest)
        assert "The pass key is 12345. Remember it." in text and text.endswith("The pass key is")
        assert abs(p.length - 300) < 30
    shallow, deep = build_prompt(tok, 300, 0.0, 1), build_prompt(tok, 300, 1.0, 1)
    assert len(shallow.prefix) < len(deep.prefix)
    assert first_number(" 4821. Remember") == 4821 and first_number("none") is None


def test_passkey_cell_shares_prefix_and_matches_fresh_decoding(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    cell = run_cell(model, tok, 240, 0.5, trials=3, seed=0)  # >= the prompt's fixed text (200 tokens)
    assert cell["trials"] == 3 and len(cell["answers"]) == 3 and 0 <= cell["accuracy"] <= 1
    # the cached prefix gives the same greedy tokens as decoding the whole prompt from scratch
    p = build_prompt(tok, 240, 0.5, cell["keys"][0])
    full = model.generate(
        torch.tensor([p.prefix + p.rest]), max_new_tokens=8, min_new_tokens=8, do_sample=False
    )
    assert first_number(tok.decode(full[0, p.length :])) == cell["answers"][0]


def test_corpora(tmp_path: Path) -> None:
    stdlib = load_corpus("stdlib", max_docs=3)
    assert len(stdlib) == 3 and all(d.name.endswith(".py") for d in stdlib)
    (tmp_path / "a.txt").write_text("alpha " * 50)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta " * 50)
    docs = load_corpus(str(tmp_path))
    assert [d.name for d in docs] == ["a.txt", "sub/b.md"]
    assert load_corpus(str(tmp_path / "a.txt"))[0].text.startswith("alpha")
    with pytest.raises(RopeConfigError, match="not found"):
        load_corpus(str(tmp_path / "missing"))


def test_hf_dataset_corpus_from_a_local_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    folder = tmp_path / "mini"
    folder.mkdir()
    rows = [{"text": f"document {i} " * 40} for i in range(3)]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    docs = load_corpus(f"hf:{folder}")  # default split: test (the file is test.jsonl)
    assert len(load_corpus(f"hf:{folder}:test")) == 3
    with pytest.raises(RopeConfigError, match="Unknown split"):
        load_corpus(f"hf:{folder}:train")
    assert len(docs) == 3 and docs[1].text.startswith("document 1")
    with pytest.raises(RopeConfigError, match="cannot load dataset"):
        load_corpus(f"hf:{tmp_path / 'nothing-here'}")


def test_eval_command_end_to_end_and_resume(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--method",
        "none,linear,self-extend",
        "--factor",
        "2",
        "--lengths",
        "32,64,128",
        "--docs",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
        "--group",
        "2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "linear(factor=2)" in out and "self-extend" in out
    records = [r for r in read_jsonl(tmp_path / "results.jsonl") if r["command"] == "eval"]
    assert {r["metric"] for r in records} == {"prefix", "band"}
    assert len(records) == 3 * 3 * 2
    assert (tmp_path / "eval_prefix.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "| linear(factor=2)" in report and "|---" in report
    header = next(line for line in report.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "32", "64", "128"]
    units = len(list(read_jsonl(tmp_path / "doc_results.jsonl")))
    assert units == 3 * 2
    # interrupted runs resume: a second run recomputes nothing and appends nothing
    assert main(argv) == 0
    assert len(list(read_jsonl(tmp_path / "doc_results.jsonl"))) == units
    assert len([r for r in read_jsonl(tmp_path / "results.jsonl") if r["command"] == "eval"]) == len(records)


def test_eval_same_tokens_mode(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--method",
        "none,dynamic",
        "--factor",
        "4",
        "--lengths",
        "16,64,128",
        "--score-last",
        "32",
        "--docs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(argv) == 0
    records = list(read_jsonl(tmp_path / "results.jsonl"))
    assert {r["metric"] for r in records} == {"last"} and all(r["tokens"] == 32 for r in records)


def test_passkey_command(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "passkey",
        "--model",
        str(tiny_model_dir),
        "--method",
        "none,yarn",
        "--factor",
        "2",
        "--lengths",
        "224,256",
        "--depths",
        "0,1",
        "--trials",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(argv) == 0
    records = list(read_jsonl(tmp_path / "results.jsonl"))
    assert len(records) == 2 * 2 * 2 and (tmp_path / "passkey_none.png").exists()


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["eval", "--model", "/no/such/model", "--lengths", "16"], "cannot load model"),
        (["eval", "--corpus", "/no/such/corpus"], "not found"),
        (["eval", "--method", "yarm"], "did you mean 'yarn'"),
        (["eval", "--lengths", "abc"], "expected lengths"),
        (["passkey", "--depths", "2"], "depths must lie in [0, 1]"),
    ],
)
def test_bad_input_one_line(capsys, argv: list[str], fragment: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1


def test_passkey_length_must_hold_the_prompt(model_and_tokenizer) -> None:
    """A 2-token "passkey prompt" would be 200 tokens labelled 2 (issue 11, item 9): refused."""
    model, tok = model_and_tokenizer
    with pytest.raises(RopeConfigError, match="shorter than the passkey prompt"):
        run_cell(model, tok, 8, 0.5, trials=1, seed=0)


def test_repeated_methods_and_factors_run_once(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["eval", "--model", str(tiny_model_dir), "--method", "linear,linear", "--factor", "2,2"]
    assert main([*argv, "--lengths", "32", "--docs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    rows = [r for r in read_jsonl(tmp_path / "results.jsonl") if r["command"] == "eval"]
    assert sorted(r["metric"] for r in rows) == ["band", "prefix"]  # one method, one length
    capsys.readouterr()


def test_binary_files_are_not_text(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(RopeConfigError, match="not text"):
        load_corpus(str(tmp_path / "weights.bin"))
    (tmp_path / "notes.txt").write_text("real text " * 20)
    (tmp_path / "blob.txt").write_bytes(b"\xff\xfe\x00" * 100)
    assert [d.name for d in load_corpus(str(tmp_path))] == ["notes.txt"]  # the binary .txt is skipped


def test_eval_flags_methods_through_the_registry(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """Aliases (pi, dynamic-ntk), --log-n on every method, the shared flag spellings (issue 12)."""
    threads = torch.get_num_threads()
    argv = ["eval", "--model", str(tiny_model_dir), "--method", "pi,dynamic-ntk", "--factor", "2", "--log-n"]
    argv += ["--lengths", "32", "--docs", "1", "--precision", "fp32", "--device", "cpu", "--threads", "1"]
    try:
        assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = list(read_jsonl(tmp_path / "results.jsonl"))
    assert {(r["method"], r["label"]) for r in rows} == {
        ("linear", "linear(factor=2)+log-n"),
        ("dynamic", "dynamic(factor=2)+log-n"),
    }
    assert {(r["threads"], r["dtype"], r["device"], r["log_n"]) for r in rows} == {
        (1, "float32", "cpu", True)
    }
    assert "linear(factor=2)+log-n" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_this_machine_lacks_is_one_line(capsys) -> None:
    assert main(["eval", "--device", "cuda", "--lengths", "16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and err.count("\n") == 1
