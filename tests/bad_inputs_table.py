"""Write ``docs/bad-inputs.md``: every case of ``bad_inputs_cases.CASES`` run and its one-line error.

    PYTHONPATH=src python tests/bad_inputs_table.py        # rewrites docs/bad-inputs.md

The cases are the same list ``tests/test_bad_inputs.py`` checks, so the table cannot drift from the
tests (``test_doc_table_lists_every_case`` fails when a case is missing from the file).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_inputs_cases import CASES, Case, expand, make_files

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"

HEADER = """# Bad inputs and the errors they get

Every command line below is refused with one line on stderr and exit status 2: never a traceback,
never a silent default, and before any long work starts. The list is the data of
`tests/test_bad_inputs.py` (`tests/bad_inputs_cases.py`); this file is written from it by
`PYTHONPATH=src python tests/bad_inputs_table.py`. `{tmp}` is a scratch folder with the files the
cases name (`file`: a text file; `bin`: binary bytes; `dir`: a folder; `bindir`: a folder holding one
binary `.txt`; `hf_*.json`: transformers configs with one bad value each); `{model}` is a tiny saved
transformers model. Items refer to issue 11.

| item | command line | exit | error (stderr) |
|---|---|---|---|
"""


#: Damaged files, busy folders and interrupted work (issue 11, items 1, 2, 4, 5, 7, 10, 12) need a second
#: process, a killed build or a planted file: their tests live beside the code they guard, and this
#: hand-written section (each row names its test) is appended to the generated table.
FILES = Path(__file__).with_name("bad_inputs_files.md")


def _cell(text: str) -> str:
    """Markdown-safe, with long runs of one character shown as ``<300 x>``."""
    text = re.sub(r"(.)\1{19,}", lambda m: f"<{len(m.group(0))} {m.group(1)}>", text)
    return text.replace("|", "\\|")


def _quote(arg: str) -> str:
    """Shell quoting that leaves the ``{tmp}`` / ``{model}`` placeholders readable."""
    names = ("{tmp}", "{model}")
    for i, name in enumerate(names):
        arg = arg.replace(name, f"PLACEHOLDER{i}X")
    arg = shlex.quote(arg)
    for i, name in enumerate(names):
        arg = arg.replace(f"PLACEHOLDER{i}X", name)
    return arg


def case_row_key(case: Case) -> str:
    """The command-line cell of a case's row (what the test looks for in the doc)."""
    words = [*(f"{k}={v}" for k, v in case.env.items()), "ropelab", *(_quote(a) for a in case.argv)]
    return f"`{_cell(' '.join(words))}`"


def run_case(case: Case, tmp: Path, model: Path | None) -> tuple[int, str]:
    from ropelab.cli import main

    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(expand(case, tmp, model))
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    text = err.getvalue().strip()
    return code, text.replace(str(tmp), "{tmp}").replace(str(model), "{model}")


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch) / "tmp"
        tmp.mkdir()
        model = None
        if any(c.needs_model for c in CASES):
            from hf_fixtures import save_tiny_model

            model = save_tiny_model(Path(scratch) / "model")
        make_files(tmp, model)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for case in CASES:
                code, err = run_case(case, tmp, model)
                if code != 2 or case.expect not in err or "\n" in err:
                    print(f"case does not hold: {case.id}: exit {code}: {err}", file=sys.stderr)
                rows.append(f"| {case.item} | {case_row_key(case)} | {code} | {_cell(err)} |")
        finally:
            os.chdir(cwd)
    DOC.write_text(HEADER + "\n".join(rows) + "\n\n" + FILES.read_text())
    print(f"wrote {DOC} ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
