"""Measurement on a real model: perplexity against context length and passkey retrieval, with reports.

One public call per command (the CLI is parse -> one call -> print):

- :func:`evaluate_methods` (``ropelab eval``) -> :class:`EvalRun`;
- :func:`passkey_grid` (``ropelab passkey``) -> :class:`PasskeyRun`;
- the scoring pieces other jobs reuse (``ropelab search``): :func:`last_sums` (the same last tokens given
  L of context), :func:`token_nll`, :func:`tokenize_documents`, :func:`documents_identity`;
- :func:`render_results`: eval and passkey tables, ``report.md`` and plots re-drawn from results files,
  several runs side by side, without loading a model (``ropelab report`` is
  :func:`ropelab.results.render_results`, the same with every command's renderer).

The renderers (:func:`eval_tables`, :func:`eval_report`, :func:`passkey_table`, :func:`eval_plots`,
:func:`passkey_plots`, :func:`eval_ci_tables`, :func:`eval_paired_tables`) take rows, from a run or
from files; :data:`RENDERERS` maps a results row's ``command`` (eval, passkey) to the function that
renders its rows. :func:`find_key_tokens`: LongPPL's key tokens (:mod:`ropelab.evaluate.key_tokens`).
"""

from ropelab.evaluate.key_tokens import KeyTokenRule, KeyTokens, find_key_tokens, key_token_mask
from ropelab.evaluate.nll import token_nll
from ropelab.evaluate.passkey_grid import PasskeyRun, passkey_grid
from ropelab.evaluate.perplexity import Sums, last_sums
from ropelab.evaluate.report import (
    RENDERERS,
    Rendered,
    Section,
    eval_ci_tables,
    eval_paired_tables,
    eval_plots,
    eval_report,
    eval_tables,
    passkey_plots,
    passkey_table,
    read_results,
    render_results,
)
from ropelab.evaluate.run import EvalRun, evaluate_methods
from ropelab.evaluate.setup import LoadedModel, expand_methods, load, resolve_device, resolve_dtype
from ropelab.evaluate.sweep import documents_identity, tokenize_documents

__all__ = [
    "RENDERERS",
    "EvalRun",
    "KeyTokenRule",
    "KeyTokens",
    "LoadedModel",
    "PasskeyRun",
    "Rendered",
    "Section",
    "Sums",
    "documents_identity",
    "eval_ci_tables",
    "eval_paired_tables",
    "eval_plots",
    "eval_report",
    "eval_tables",
    "evaluate_methods",
    "expand_methods",
    "find_key_tokens",
    "key_token_mask",
    "last_sums",
    "load",
    "passkey_grid",
    "passkey_plots",
    "passkey_table",
    "read_results",
    "render_results",
    "resolve_device",
    "resolve_dtype",
    "token_nll",
    "tokenize_documents",
]
