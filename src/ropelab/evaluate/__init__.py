"""Measurement on a real model: perplexity against context length and passkey retrieval, with reports.

One public call per command (the CLI is parse -> one call -> print):

- :func:`evaluate_methods` (``ropelab eval``) -> :class:`EvalRun`;
- :func:`passkey_grid` (``ropelab passkey``) -> :class:`PasskeyRun`;
- the scoring pieces other jobs reuse (``ropelab search``): :func:`last_sums` (the same last tokens given
  L of context), :func:`token_nll`, :func:`tokenize_documents`, :func:`documents_identity`;
- :func:`render_results`: eval and passkey tables, ``report.md`` and plots re-drawn from results files,
  several runs side by side, without loading a model (``ropelab report`` is
  :func:`ropelab.results.render_results`, the same with every command's renderer).

For other job packages (``ropelab.tasks``), the building blocks of a grid: :func:`open_model`,
:func:`prefix_cache` (a prompt prefix's KV cache, computed once), :func:`greedy_continue_batch` (greedy
decoding after it, a batch of continuations of one token length), :func:`batches`; and of its split over
``torchrun``'s ranks (:mod:`ropelab.evaluate.shard`): :func:`job_lock`, :func:`shared_context`,
:func:`run_cells` (a grid of cells with resume keys, split over the ranks, one row each), :func:`done_rows`,
and its pieces :func:`my_share`, :func:`append_row`.

The renderers (:func:`eval_tables`, :func:`eval_report`, :func:`passkey_table`, :func:`eval_plots`,
:func:`passkey_plots`, :func:`eval_ci_tables`, :func:`eval_paired_tables`) take rows, from a run or
from files; :data:`RENDERERS` maps a results row's ``command`` (eval, passkey) to the function that
renders its rows. :func:`find_key_tokens`: LongPPL's key tokens (:mod:`ropelab.evaluate.key_tokens`).
"""

from ropelab.evaluate.key_tokens import KeyTokenRule, KeyTokens, find_key_tokens, key_token_mask
from ropelab.evaluate.nll import token_nll
from ropelab.evaluate.passkey import batches, greedy_continue_batch, prefix_cache
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
from ropelab.evaluate.setup import (
    LoadedModel,
    expand_methods,
    load,
    open_model,
    resolve_device,
    resolve_dtype,
)
from ropelab.evaluate.shard import append_row, done_rows, job_lock, my_share, run_cells, shared_context
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
    "append_row",
    "batches",
    "documents_identity",
    "done_rows",
    "eval_ci_tables",
    "eval_paired_tables",
    "eval_plots",
    "eval_report",
    "eval_tables",
    "evaluate_methods",
    "expand_methods",
    "find_key_tokens",
    "greedy_continue_batch",
    "job_lock",
    "key_token_mask",
    "last_sums",
    "load",
    "my_share",
    "open_model",
    "passkey_grid",
    "passkey_plots",
    "passkey_table",
    "prefix_cache",
    "read_results",
    "render_results",
    "resolve_device",
    "resolve_dtype",
    "run_cells",
    "shared_context",
    "token_nll",
    "tokenize_documents",
]
