"""The task generators (ropelab.tasks, issue 14): deterministic for a seed, well-posed (every answer is in
the prompt, found by a plain string search), distractors never answers, the token length on target, the
prefix shared by the trials of a cell; the scorer gives 1 to the truth and 0 to a wrong answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ropelab.errors import RopeConfigError
from ropelab.tasks import TASKS, Frame, Haystack, Measure, get_task, parse_tasks, score
from ropelab.tasks.generators import LIST_TOLERANCE, TOLERANCE
from ropelab.tasks.text import token_counter

CASES = [
    (name, depth) for name, t in TASKS.items() for depth in ((0.0, 0.5, 1.0) if t.uses_depth else (None,))
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(("name", "depth"), CASES)
def test_each_task_is_seeded_well_posed_and_on_length(tokenizer, name: str, depth: float | None) -> None:
    task, length = TASKS[name], 700
    samples = [task.generate(tokenizer, length, depth, seed, layout=3) for seed in range(3)]
    again = task.generate(tokenizer, length, depth, 0, layout=3)
    assert again == samples[0]  # the same seed, the same prompt and answers
    assert samples[1].answers != samples[0].answers  # another seed, other answers
    count = token_counter(tokenizer)
    slack = TOLERANCE if task.uses_depth else LIST_TOLERANCE
    for s in samples:
        text = s.prefix + s.rest
        assert all(a in text for a in s.answers), (name, s.answers)  # recoverable by a string search
        assert not set(s.answers) & set(s.distractors)
        assert all(a not in d and d not in a for a in s.answers for d in s.distractors)
        assert count(s.prefix) + count(s.rest + "\n" + s.answer_prefix) == s.tokens
        assert length - slack <= s.tokens <= length, (name, s.tokens)
        assert score(" ".join(s.answers), s.answers) == {"all": 1.0, "part": 1.0, "exact": 1.0}
        assert score("no idea", s.answers)["all"] == 0.0
        if s.distractors:
            assert score(" ".join(s.distractors), s.answers) == {"all": 0.0, "part": 0.0, "exact": 0.0}
    if task.uses_depth:  # the trials of a cell share everything before the first needle
        assert len({s.prefix for s in samples}) == 1


def test_depth_moves_the_first_needle_through_the_haystack() -> None:
    task = TASKS["niah-single"]
    spots = []
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        s = task.generate("bytes", 4000, depth, 1)
        spots.append((s.prefix + s.rest).index(s.answers[0]) / s.tokens)
    assert spots == sorted(spots) and spots[0] < 0.1 and spots[-1] > 0.85 and 0.4 < spots[2] < 0.6


def test_the_needles_of_multikey_and_variable_tracking() -> None:
    s = TASKS["niah-multikey"].generate("bytes", 3000, 0.2, 5)
    text = s.prefix + s.rest
    assert len(s.answers) == 1 and len(s.distractors) == 3
    assert all(text.count(f" is {v}. ") == 1 for v in (*s.answers, *s.distractors))
    vt = TASKS["vt"].generate("bytes", 3000, 0.2, 5)
    value = vt.extra["value"]
    text = vt.prefix + vt.rest
    chain = [vt.answers[0]]  # follow the assignments from the value: every name found, no other
    assert f"VAR {chain[0]} = {value}. " in text
    while (nxt := [n for n in vt.answers if f"VAR {n} = {chain[-1]}. " in text]) and len(chain) < 10:
        chain.append(nxt[0])
    assert chain == list(vt.answers) and len(chain) == 5


def test_aggregation_answers_are_the_most_frequent() -> None:
    from collections import Counter

    s = TASKS["cwe"].generate("bytes", 3000, None, 2)
    words = Counter(w for w in s.rest.split() if w.isalpha())
    top = {w for w, _ in words.most_common(len(s.answers))}
    assert top == set(s.answers)
    f = TASKS["fwe"].generate("bytes", 3000, None, 2)
    counts = Counter(f.rest.split("\n\n")[0].split()).most_common(4)
    assert {w for w, _ in counts[:3]} == set(f.answers) and counts[2][1] > counts[3][1]


def test_any_haystack_and_a_chat_frame() -> None:
    hay = Haystack("mine", "Alpha beta gamma.\nDelta epsilon zeta! " * 20)
    s = TASKS["niah-single"].generate("bytes", 2000, 0.5, 1, haystack=hay)
    assert "Alpha beta" in s.prefix and s.answers[0] in s.rest
    frame = Frame("<user>", "</user><assistant>", "chat")
    c = TASKS["niah-single"].generate(Measure(len, frame), 2000, 0.5, 1, haystack=hay)
    assert c.frame == "chat" and c.tokens == len("<user>" + c.prefix) + len(
        c.rest + frame.mid + c.answer_prefix
    )
    assert c.tokens <= 2000


def test_a_corpus_file_is_a_haystack(tmp_path: Path) -> None:
    from ropelab.tasks import corpus_haystack

    (tmp_path / "doc.txt").write_text("def f(x):\n    return x + 1\n\n" * 50)
    hay = corpus_haystack(str(tmp_path / "doc.txt"))
    s = TASKS["lab-niah"].generate("bytes", 600, 0.5, 0, haystack=hay)
    assert hay.name.endswith("doc.txt") and "return x + 1" in s.prefix and s.tokens == 600
    assert f"{s.answer_prefix}{s.answers[0]}\n" in s.rest  # the needle line, at the start of a line
    assert s.rest.split(s.answer_prefix)[0].endswith("\n") or s.rest.startswith(s.answer_prefix)


def test_bad_task_input_is_one_line() -> None:
    with pytest.raises(RopeConfigError, match="did you mean 'niah-single'"):
        get_task("niah-singel")
    with pytest.raises(RopeConfigError, match="no task given"):
        parse_tasks(",")
    with pytest.raises(RopeConfigError, match="shorter than its fixed text"):
        TASKS["niah-multiquery"].generate("bytes", 100, 0.5, 0)
    with pytest.raises(RopeConfigError, match="depth must lie in"):
        TASKS["vt"].generate("bytes", 2000, 1.5, 0)
    assert [t.name for t in parse_tasks("vt, cwe,vt")] == ["vt", "cwe"]
