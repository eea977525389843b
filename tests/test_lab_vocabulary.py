"""The lab speaks the registry's vocabulary: aliases accepted, canonical labels out, its policy on top."""

from __future__ import annotations

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.lab import LabConfig
from ropelab.lab.methods import (
    DEFAULT_LABELS,
    FINETUNE,
    METHODS,
    SCALED,
    ZERO_SHOT,
    canonical_label,
    lab_spec,
    method_encoding,
    method_params,
    parse_label,
    resolved_params,
)
from ropelab.registry import REGISTRY, parse_method

ALIASES = [
    ("pi", "linear"),
    ("linear", "linear"),
    ("dynamic-ntk", "dynamic"),
    ("dynamic-ntk+log-n", "dynamic+log-n"),
    ("default", "none"),
    ("ntk-aware*4+log-n", "ntk*4+log-n"),
    ("PI+log-n", "linear+log-n"),
]


@pytest.mark.parametrize(("given", "label"), ALIASES)
def test_aliases_give_the_canonical_label_and_the_same_method(given: str, label: str) -> None:
    assert canonical_label(given) == label == parse_method(given).label
    assert parse_label(given) == parse_label(label)
    for length in (64, 256):
        assert method_params(given, trained=64, length=length) == method_params(
            label, trained=64, length=length
        )
    a = method_encoding(given, head_dim=8, base=10000.0, trained=16, length=64)
    b = method_encoding(label, head_dim=8, base=10000.0, trained=16, length=64)
    pos = torch.arange(64)
    assert type(a) is type(b)
    assert all(torch.equal(x, y) for x, y in zip(a.rope.cos_sin(pos), b.rope.cos_sin(pos), strict=True))


def test_every_lab_method_is_a_registry_name_and_the_defaults_are_canonical() -> None:
    assert all(name in REGISTRY and REGISTRY[name].kind != "encoding" for name in METHODS)
    for labels in (DEFAULT_LABELS, SCALED, FINETUNE, ZERO_SHOT):
        assert all(canonical_label(label) == label for label in labels), labels
    # the policy's dynamic methods are the registry's
    assert {m for m in METHODS if REGISTRY[m].dynamic} == {"dynamic", "dynamic-yarn"}


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("yarm", "did you mean 'yarn'"),
        ("llama3", "not covered by the lab's policy"),
        ("alibi", "is an encoding"),
        ("yarn(factor=2)", "from L/T"),
        ("rerope*2", "static factor"),
        ("dynamic*2", "static factor"),
        ("ntk*0.5", "A >= 1"),
    ],
)
def test_the_lab_refuses_what_its_policy_does_not_cover(label: str, fragment: str) -> None:
    with pytest.raises(RopeConfigError, match=fragment.replace("(", r"\(")):
        lab_spec(label)


def test_resolved_parameters_follow_the_policy() -> None:
    assert resolved_params("pi", trained=128, length=512) == {"factor": 4.0}
    assert resolved_params("ntk*4", trained=128, length=256) == {"factor": 8.0}
    assert resolved_params("self-extend", trained=128, length=2048) == {"window": 64, "group": 31}
    assert resolved_params("dynamic-ntk+log-n", trained=128, length=512) == {"seq_len": 512}
    assert resolved_params("none", trained=128, length=512) == {}


def test_lab_config_holds_canonical_labels_without_repeats() -> None:
    config = LabConfig(methods=("pi", "linear", "dynamic-ntk+log-n"), finetune_methods=("default", "pi"))
    assert config.methods == ("linear", "dynamic+log-n")
    assert config.finetune_methods == ("none", "linear")
    assert LabConfig.from_dict(config.to_dict()) == config
