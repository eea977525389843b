"""``ropelab train`` as one library call: train one lab model and record it in ``OUT/results.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ropelab.lab.checkpoints import read_meta
from ropelab.lab.recipe import TrainRecipe, train_model
from ropelab.lab.records import file_sha256, lab_context, train_key, train_row
from ropelab.report import append_jsonl


def train_and_record(
    recipe: TrainRecipe,
    out: str | Path,
    *,
    progress: Any = True,
    save_every: int = 100,
    threads: int | None = 2,
) -> dict[str, Any]:
    """Train ``recipe`` into ``out/ENCODING.safetensors`` (resumable; a finished model is not trained
    again, see :func:`ropelab.lab.recipe.train_model`) and append its stamped row to
    ``out/results.jsonl``: ``command`` ``"train"``, ``model_id`` = the file's sha256, the corpus's sha256
    from the checkpoint, ``recipe`` and the training summary (``path``, ``skipped``, losses, seconds).
    Returns the row.
    """
    summary = train_model(recipe, out, progress=progress, checkpoint_every=save_every, threads=threads)
    assert summary is not None  # no stop_after: the run finishes or raises
    path = Path(summary["path"])
    meta = read_meta(path)
    fields = {
        "command": "train",
        "model": recipe.encoding,
        "trained_length": recipe.length,
        "corpus_sha256": str(meta.get("data", {}).get("corpus_sha256")),
        "threads": threads or torch.get_num_threads(),
    }
    key = train_key(lab_context(model_id="", **fields), recipe.to_dict())
    row = train_row(
        lab_context(model_id=file_sha256(path), **fields), key=key, recipe=recipe.to_dict(), **summary
    )
    append_jsonl(Path(out) / "results.jsonl", row)
    return row
