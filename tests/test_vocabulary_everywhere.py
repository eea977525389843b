"""Issue 12's first "done when": every name of the one vocabulary, and every old spelling, means the same
canonical method in Python, in `eval`, in `lab` and in `finetune`.

Each command is walked through the code its flags go to (the parser, then the library call's first step),
without running a model: `eval` -> ropelab.evaluate.expand_methods, `lab` -> LabConfig (the lab's policy),
`finetune` -> FinetuneConfig, Python -> ropelab.parse_method and ropelab.hf.make_extension.
"""

from __future__ import annotations

import pytest

import ropelab
from ropelab.cli import build_parser
from ropelab.errors import RopeConfigError
from ropelab.registry import ALIASES, REGISTRY

#: every method name and every alias (old spellings: pi, default, dynamic-ntk, ntk-aware), with its meaning
NAMES = sorted(
    [(n, n) for n, e in REGISTRY.items() if e.kind != "encoding"] + list(ALIASES.items()),
)
#: what a method needs beyond its name to be built for a tiny model (head_dim 16: 8 rotary pairs)
NEEDS = {"longrope": {"short_factor": [1.0] * 8, "long_factor": [2.0] * 8}}


def _tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=64, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip


@pytest.mark.parametrize(("name", "canonical"), NAMES)
def test_every_name_means_one_method_everywhere(name: str, canonical: str) -> None:
    from ropelab.cli.finetune_cmd import config_from_args
    from ropelab.evaluate import expand_methods
    from ropelab.hf import make_extension
    from ropelab.lab import LabConfig
    from ropelab.lab.methods import METHODS as LAB_POLICY

    entry = REGISTRY[canonical]
    # Python: the grammar and a model's extension
    assert ropelab.parse_method(name).method == canonical
    assert ropelab.parse_method(f"{name}+log-n").label == f"{canonical}+log-n"
    params = {**NEEDS.get(canonical, {}), **({"factor": 2.0} if entry.takes_factor else {})}
    assert make_extension(_tiny_config(), name, **params).name == canonical
    # eval (and passkey, the same flags and library call)
    parser = build_parser()
    args = parser.parse_args(["eval", "--method", name, "--factor", "2"])
    assert {s.method for s in expand_methods(args.method, args.factor)} == {canonical}
    # finetune
    args = parser.parse_args(["finetune", "--model", "lab", "--method", name, "--length", "512"])
    assert config_from_args(args).method == canonical
    # lab: the names its policy covers mean the same method; the others are refused in one line
    args = parser.parse_args(["lab", "--methods", name])
    if canonical in LAB_POLICY:
        labels = LabConfig.from_dict({"methods": args.methods}).methods
        assert [ropelab.parse_method(label).method for label in labels] == [canonical]
    else:
        with pytest.raises(RopeConfigError, match="lab"):
            LabConfig.from_dict({"methods": args.methods})


@pytest.mark.parametrize("old", ["pi", "dynamic-ntk", "default"])
def test_old_spellings_give_results_the_canonical_name(old: str) -> None:
    """Results carry one name: the label of an alias is its canonical method's label."""
    spec = ropelab.parse_method(old)
    assert spec.label == ALIASES[old] and ropelab.parse_method(spec.label) == spec


def test_encodings_are_not_methods_for_a_loaded_model() -> None:
    from ropelab.evaluate import expand_methods

    with pytest.raises(RopeConfigError, match="encoding"):
        expand_methods("alibi")


def test_the_labs_factor_policy_is_refused_for_a_loaded_model() -> None:
    from ropelab.evaluate import expand_methods

    with pytest.raises(RopeConfigError, match="lab's factor policy"):
        expand_methods("ntk*4", [2])
