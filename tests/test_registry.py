"""The one vocabulary (ropelab.registry): names, aliases, the grammar, labels that parse back."""

from __future__ import annotations

import pytest

import ropelab
from ropelab.errors import RopeConfigError
from ropelab.registry import ALIASES, REGISTRY, MethodSpec, canonical, parse_method, parse_methods


def test_registry_lists_every_kind_and_every_implementation() -> None:
    from ropelab.attention import ATTENTION_METHODS
    from ropelab.encodings import ENCODINGS

    kinds = {e.kind for e in REGISTRY.values()}
    assert kinds == {"frequency", "attention", "encoding"}
    impl = {e.impl for e in REGISTRY.values() if e.kind == "frequency"}
    assert impl == set(ropelab.METHODS)  # every frequency function has exactly one name
    assert {n for n, e in REGISTRY.items() if e.kind == "attention"} == set(ATTENTION_METHODS)
    assert {n for n, e in REGISTRY.items() if e.kind == "encoding"} == set(ENCODINGS)
    assert not set(ALIASES) & set(REGISTRY)  # an alias never shadows a name


@pytest.mark.parametrize(
    ("alias", "name"), [("pi", "linear"), ("default", "none"), ("dynamic-ntk", "dynamic"), ("PI", "linear")]
)
def test_aliases_resolve_once_to_the_canonical_name(alias: str, name: str) -> None:
    assert canonical(alias) == name
    assert parse_method(alias).method == name
    assert parse_method(alias).label == name


@pytest.mark.parametrize(
    "text",
    [
        "none",
        "linear(factor=4)",
        "ntk*4+log-n",
        "none+log-n",
        "self-extend(group=4,window=1024)",
        "yarn(factor=2)",
    ],
)
def test_labels_parse_back_to_the_same_spec(text: str) -> None:
    spec = parse_method(text)
    assert spec.label == text
    assert parse_method(spec.label) == spec


def test_one_type_per_parameter_and_log_n_one_option() -> None:
    assert parse_method("yarn(factor=4)") == parse_method("yarn", factor=4.0)
    assert parse_method("yarn", factor=4).to_dict() == {
        "method": "yarn",
        "params": {"factor": 4.0},
        "log_n": False,
    }
    assert parse_method("yarn+log-n") == parse_method("yarn", log_n=True) == MethodSpec("yarn", log_n=True)
    assert MethodSpec("yarn", {"log_n": True}).log_n
    assert parse_method("self-extend", group=4.0).params == {"group": 4}


def test_parse_methods_splits_outside_brackets_and_drops_repeats() -> None:
    labels = [s.label for s in parse_methods("none, yarn(factor=2,beta_fast=16),pi,linear")]
    assert labels == ["none", "yarn(beta_fast=16,factor=2)", "linear"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yran", "did you mean 'yarn'"),
        ("pi(window=3)", "takes no parameter 'window'"),
        ("rerope*2", "multiplies a static factor"),
        ("ntk*0.5", "A >= 1"),
        ("yarn+bar", "the only suffix is +log-n"),
        ("log-n", "an option, not a method"),
        ("yarn(factor=abc)", "expected a number"),
        ("yarn(factor=2", "unbalanced"),
        ("self-extend(group=2.5)", "whole number"),
        ("", "empty"),
    ],
)
def test_bad_method_text_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(RopeConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse_methods(text) if text == "yarn(factor=2" else parse_method(text)
