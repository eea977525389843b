"""Bad command lines and the one-line error each gets: the data behind ``tests/test_bad_inputs.py`` and
the table in ``docs/bad-inputs.md`` (written by ``python tests/bad_inputs_table.py``), so neither drifts.

Each case is an argv as a user types it. ``{tmp}`` is a scratch folder holding the files that
:func:`make_files` writes; ``{model}`` is the tiny saved transformers model of ``tests/hf_fixtures.py``.
Every case must exit 2 with one line on stderr, no traceback, containing ``expect``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    item: str  # the item of issue 11 that found it
    argv: tuple[str, ...]
    expect: str  # a substring of the one-line error
    env: dict[str, str] = field(default_factory=dict)
    needs_model: bool = False  # the tiny saved model ({model})

    @property
    def id(self) -> str:
        return " ".join(self.argv)


# minimal valid arguments of every command that takes --out, so only --out is wrong
_OUT_COMMANDS = {
    "inspect": ("inspect", "--method", "linear", "--factor", "2", "--trained-length", "8"),
    "export": ("export", "--method", "linear", "--factor", "2"),
    "eval": ("eval",),
    "passkey": ("passkey",),
    "lab": ("lab",),
    "train": ("train", "--encoding", "rope"),
    "finetune": ("finetune", "--length", "64"),
}
_BAD_OUTS = {
    "{tmp}/file": "is not a folder",
    "/dev/null": "is not a folder",
    "{tmp}/file/out": "is a file",
    "{tmp}/" + "x" * 300: "too long",
}

_INSPECT = ("inspect", "--trained-length", "8")
_YARN = (*_INSPECT, "--method", "yarn", "--factor", "2")

CASES: list[Case] = [
    *(
        Case("8", (*argv, "--out", out), expect)
        for argv in _OUT_COMMANDS.values()
        for out, expect in _BAD_OUTS.items()
    ),
    # threads and lengths
    Case("8", ("eval", "--threads", "-1"), "--threads: must be >= 1"),
    Case("8", ("passkey", "--threads", "-1"), "--threads: must be >= 1"),
    Case("8", ("train", "--encoding", "rope", "--threads", "-1"), "--threads: must be >= 1"),
    Case("8", ("finetune", "--length", "64", "--threads", "-1"), "--threads: must be >= 1"),
    Case("8", ("lab", "--threads", "0"), "--threads: must be >= 1"),
    Case("9", ("eval", "--threads", "0"), "--threads: must be >= 1"),
    Case("8", ("eval", "--lengths", "infk"), "expected lengths"),
    Case("8", ("eval", "--lengths", "nan"), "expected lengths"),
    Case("8", ("finetune", "--length", "infk"), "expected lengths"),
    Case("8", ("eval", "--sliding", "-1"), "sliding stride must be >= 1"),
    Case("9", ("eval", "--sliding", "0"), "sliding stride must be >= 1"),
    Case("9", ("eval", "--score-last", "-5"), "--score-last) must be >= 1"),
    Case("9", ("eval", "--score-last", "0"), "--score-last) must be >= 1"),
    Case("8", ("passkey", "--depths", ","), "no number given"),
    Case("8", ("eval", "--factor", ","), "no number given"),
    Case(
        "9",
        (*_INSPECT, "--method", "linear", "--factor", "2", "--target-length", "0"),
        "--target-length: must be >= 1",
    ),
    # --hf-config files
    Case("8", ("inspect", "--hf-config", "{tmp}/bin"), "not a text file"),
    Case("8", ("inspect", "--hf-config", "{tmp}/hf_head_dim.json"), "head_dim"),
    Case("8", ("inspect", "--hf-config", "{tmp}/hf_rope_list.json"), "rope_parameters"),
    Case("8", ("inspect", "--hf-config", "{tmp}/hf_zero_heads.json"), "num_attention_heads"),
    Case("8", ("inspect", "--hf-config", "{tmp}/dir"), "--hf-config"),
    Case("9", ("inspect", "--hf-config", "{tmp}/hf_truncate.json"), "truncate must be true or false"),
    Case("9", ("inspect", "--hf-config", "{tmp}/hf_log_n.json"), "log_n must be true or false"),
    Case("8", ("inspect", "--method", "longrope", "--short-factor", "@{tmp}/dir"), "cannot read"),
    Case("8", ("inspect", "--method", "longrope", "--short-factor", "@{tmp}/bin"), "cannot read"),
    # values the formulas cannot take (validated in RopeConfig)
    Case("8", (*_INSPECT, "--method", "ntk", "--head-dim", "2", "--factor", "2"), "rotary dim >= 4"),
    Case("8", (*_INSPECT, "--method", "dynamic", "--head-dim", "2", "--factor", "2"), "rotary dim >= 4"),
    Case("8", (*_INSPECT, "--method", "linear", "--factor", "1e300"), "not finite and > 0"),
    Case("8", (*_INSPECT, "--method", "ntk", "--factor", "1e300"), "cannot take these values"),
    Case("8", (*_INSPECT, "--method", "default", "--base", "1e300"), "not finite and > 0"),
    Case("8", (*_YARN, "--beta-slow", "-1"), "beta_slow must be > 0"),
    Case("9", (*_YARN, "--beta-fast", "0"), "beta_fast must be > 0"),
    Case("8", (*_INSPECT, "--method", "llama3", "--factor", "2", "--low-freq-factor", "0"), "> 0"),
    Case("8", (*_YARN, "--mscale", "-20", "--mscale-all-dim", "1"), "attention scaling"),
    # models: a garbage file, mistyped names (item 11: no 50 s of hub retries)
    Case("8", ("eval", "--model", "{tmp}/garbage.safetensors"), "cannot load model"),
    Case("8", ("eval", "--model", "{tmp}/file"), "cannot load model"),
    Case("8", ("finetune", "--length", "64", "--model", "{tmp}/garbage.safetensors"), "safetensors"),
    Case("8", ("eval", "--model", "{tmp}/badweights", "--quiet"), "cannot load model", needs_model=True),
    Case("11", ("eval", "--model", "smolm2"), "did you mean 'smollm2'"),
    Case("11", ("passkey", "--model", "smolm2"), "did you mean 'smollm2'"),
    Case("11", ("finetune", "--length", "64", "--model", "smolm2"), "did you mean 'smollm2'"),
    Case("11", ("eval", "--model", "lab"), "only by `ropelab finetune`"),
    Case("11", ("passkey", "--model", "lab"), "only by `ropelab finetune`"),
    Case("11", ("eval", "--model", "no-such-owner/no-such-model"), "HF_HUB_OFFLINE=1"),
    Case(
        "11",
        ("eval", "--model", "no-such-owner/no-such-model"),
        "not in the local Hugging Face cache",
        env={"HF_HUB_OFFLINE": "1"},
    ),
    # corpora
    Case("9", ("eval", "--corpus", "{tmp}/bin"), "not text"),
    Case("9", ("eval", "--corpus", "{tmp}/bindir"), "no text file"),
    # passkey lengths shorter than the prompt's fixed text
    Case(
        "9",
        ("passkey", "--model", "{model}", "--lengths", "2,8", "--quiet", "--out", "{tmp}/pk"),
        "shorter than the passkey prompt",
        needs_model=True,
    ),
    # the lab: combinations refused before any work (items 6 and 13)
    Case("6", ("lab", "--multiples", "1,2", "--out", "{tmp}/lab"), "finetune_multiple"),
    Case(
        "13", ("lab", "--finetune-lr", "nan", "--out", "{tmp}/lab"), "finetune_lr must be a finite number > 0"
    ),
    Case(
        "13", ("lab", "--finetune-lr", "0", "--out", "{tmp}/lab"), "finetune_lr must be a finite number > 0"
    ),
]


def make_files(tmp: Path, model: Path | None = None) -> None:
    """The files the cases name under ``{tmp}``; with ``model``, ``badweights``: a copy of it whose
    ``model.safetensors`` is garbage."""
    if model is not None:
        shutil.copytree(model, tmp / "badweights", dirs_exist_ok=True)
        (tmp / "badweights" / "model.safetensors").write_bytes(b"\x07" + bytes(7) + b"{garbage" + bytes(999))
    (tmp / "file").write_text("a file, not a folder\n")
    binary = bytes(range(256)) * 64
    (tmp / "bin").write_bytes(binary)
    (tmp / "dir").mkdir(exist_ok=True)
    (tmp / "bindir").mkdir(exist_ok=True)
    (tmp / "bindir" / "data.txt").write_bytes(binary)
    (tmp / "garbage.safetensors").write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00{garbage" + binary)
    geometry = {"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64}
    configs = {
        "hf_head_dim.json": {**geometry, "head_dim": "abc"},
        "hf_rope_list.json": {**geometry, "rope_parameters": [1, 2]},
        "hf_zero_heads.json": {**geometry, "num_attention_heads": 0},
        "hf_truncate.json": {
            **geometry,
            "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "truncate": "false"},
        },
        "hf_log_n.json": {**geometry, "rope_scaling": {"rope_type": "linear", "factor": 2.0, "log_n": "no"}},
    }
    for name, config in configs.items():
        (tmp / name).write_text(json.dumps(config))


def expand(case: Case, tmp: Path, model: Path | None) -> list[str]:
    """The case's argv with ``{tmp}`` and ``{model}`` filled in."""
    return [a.replace("{tmp}", str(tmp)).replace("{model}", str(model)) for a in case.argv]
