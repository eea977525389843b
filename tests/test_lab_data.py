"""The lab corpus: deterministic, disjoint split by file name; reproducible batches; held-out windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.lab.data import (
    SEPARATOR,
    RandomWindows,
    corpus_files,
    corpus_info,
    eval_windows,
    is_validation,
    load_corpus,
)


def test_split_rule_is_a_function_of_the_name_only() -> None:
    # sha256("ast.py")[:8] % 10 == 0 and sha256("os.py")[:8] % 10 != 0 on every machine
    assert is_validation("ast.py")
    assert not is_validation("os.py")


def test_stdlib_split_is_disjoint_complete_and_about_ten_percent() -> None:
    corpus = load_corpus()
    train = [n for n, _ in corpus.train]
    val = [n for n, _ in corpus.validation]
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(p.name for p in corpus_files())
    assert train == sorted(train) and val == sorted(val)
    assert 0.04 < len(val) / (len(train) + len(val)) < 0.2
    again = load_corpus()
    assert again.digest == corpus.digest
    info = corpus_info(corpus)
    assert info["validation_files"] == len(val) and len(info["corpus_sha256"]) == 64


def test_corpus_from_a_folder(tmp_path: Path) -> None:
    names = [f"m{i:02d}.py" for i in range(40)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(bytes([65 + i % 26]) * (100 + i))
    (tmp_path / "notes.txt").write_text("ignored")
    corpus = load_corpus(tmp_path)
    assert [n for n, _ in corpus.validation] == [n for n in names if is_validation(n)]
    tokens = corpus.train_tokens()
    assert tokens.dtype == torch.uint8
    assert tokens.numel() == sum(len(d) for _, d in corpus.train) + len(corpus.train) - 1
    assert int((tokens == SEPARATOR[0]).sum()) == len(corpus.train) - 1


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RopeConfigError, match=r"no \*\.py files"):
        load_corpus(tmp_path)


def test_random_windows_are_reproducible_and_resumable() -> None:
    tokens = torch.arange(1000, dtype=torch.int64).to(torch.uint8)
    a = RandomWindows(tokens, batch_size=3, length=8, seed=5)
    first = [a.next_batch() for _ in range(4)]
    x, y = first[0]
    assert x.shape == y.shape == (3, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    b = RandomWindows(tokens, batch_size=3, length=8, seed=5)
    b.load_state_dict({"step": 2, "seed": 5})
    assert torch.equal(b.next_batch()[0], first[2][0])
    c = RandomWindows(tokens, batch_size=3, length=8, seed=6)
    assert not torch.equal(c.next_batch()[0], first[0][0])
    with pytest.raises(RopeConfigError, match="seed"):
        c.load_state_dict(a.state_dict())


def test_eval_windows_round_robin_over_files() -> None:
    corpus = load_corpus()
    w = eval_windows(corpus, 256, 8)
    assert w.shape == (8, 257) and w.dtype == torch.int64
    long_files = [d for _, d in corpus.validation if len(d) > 256]
    assert bytes(w[0].tolist()) == long_files[0][:257]
    assert bytes(w[1].tolist()) == long_files[1][:257]  # the second window is the next file's start
    with pytest.raises(RopeConfigError, match="shorter"):
        eval_windows(corpus, 10**9, 4)
