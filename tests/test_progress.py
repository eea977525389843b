"""Progress that reaches a log file: a plain line every interval when the output is not a terminal."""

from __future__ import annotations

import io

import pytest

from ropelab.report.progress import format_duration, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_at_the_interval_and_at_close() -> None:
    stream, clock = io.StringIO(), FakeClock()
    bar = progress_bar(40, desc="lab", unit="units", stream=stream, interval=30.0, clock=clock)
    bar.set_postfix_str("rope L=256")
    for _ in range(11):  # 11 units in 29 s: no line yet
        clock.now += 29 / 11
        bar.update()
    bar.set_postfix_str("rope L=512")  # still 29 s: quiet
    assert stream.getvalue() == ""
    clock.now = 100.0 + 65.0
    bar.update()  # 12/40 at 65 s: 30% done, (65 s / 12) x 28 units = 151.7 s left
    lines = stream.getvalue().splitlines()
    assert lines == ["lab: 12/40 units (30%), 1m05s elapsed, about 2m32s left - rope L=512"]
    clock.now += 10.0
    bar.update(3)  # 10 s since the last line: quiet
    assert len(stream.getvalue().splitlines()) == 1
    clock.now += 25.0
    bar.set_postfix_str("ntk L=512")  # a new unit starting, 35 s after the last line: a line
    assert stream.getvalue().splitlines()[-1].startswith("lab: 15/40 units (38%), 1m40s elapsed")
    bar.update(25)
    clock.now += 1.0
    bar.close()
    bar.close()  # idempotent
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1] == "lab: 40/40 units (100%), 1m41s elapsed - ntk L=512"


def test_context_manager_closes_with_a_last_line() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with progress_bar(3, desc="passkey", unit="cell", stream=stream, clock=clock) as bar:
        for _ in range(3):
            clock.now += 1.0
            bar.update()
    assert stream.getvalue() == "passkey: 3/3 cell (100%), 3s elapsed\n"


def test_disabled_prints_nothing() -> None:
    for stream in (io.StringIO(), FakeTerminal()):
        with progress_bar(5, desc="lab", disable=True, stream=stream, interval=0.0) as bar:
            bar.set_postfix_str("x")
            bar.update(5)
        assert stream.getvalue() == ""


def test_terminal_gets_a_tqdm_bar() -> None:
    tqdm = pytest.importorskip("tqdm")
    stream = FakeTerminal()
    with progress_bar(4, desc="eval", unit="len", stream=stream) as bar:
        assert isinstance(bar, tqdm.tqdm)
        bar.set_postfix_str("yarn")
        bar.update(4)
    assert "eval" in stream.getvalue() and "4/4" in stream.getvalue()


def test_zero_total_and_bad_arguments() -> None:
    stream = io.StringIO()
    progress_bar(0, desc="lab", stream=stream, clock=FakeClock()).close()
    assert stream.getvalue() == "lab: 0/0 it, 0s elapsed\n"
    with pytest.raises(ValueError, match="total"):
        progress_bar(-1, desc="lab", stream=stream)
    with pytest.raises(ValueError, match="interval"):
        progress_bar(1, desc="lab", stream=stream, interval=-1.0)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 4.4, 59.6, 65, 3599, 3600, 7322)] == [
        "0s",
        "4s",
        "1m00s",
        "1m05s",
        "59m59s",
        "1h00m",
        "2h02m",
    ]


def test_log_lines_take_tqdms_other_calls_and_a_resumed_start() -> None:
    """The lab and the training loop call set_description / set_postfix and pass ``initial``."""
    out, now = io.StringIO(), [0.0]
    bar = progress_bar(10, desc="lab", unit="units", stream=out, interval=30, clock=lambda: now[0], initial=4)
    assert out.getvalue() == "lab: 4/10 units (40%), 0s elapsed\n"  # a resumed run says so at once
    bar.set_description("rope L=512")
    now[0] = 40.0
    bar.update(2)  # 2 units in 40 s: 4 to go take about 80 s (the 4 skipped ones do not count)
    assert (
        out.getvalue().splitlines()[-1] == "lab: 6/10 units (60%), 40s elapsed, about 1m20s left - rope L=512"
    )
    bar.set_postfix(loss="1.234")
    bar.close()
    assert out.getvalue().splitlines()[-1].endswith("- loss=1.234")
