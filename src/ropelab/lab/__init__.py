"""The lab: tiny byte-level decoders trained short with each position encoding and tested long.

    ropelab train --encoding rope            # one model (recipe.py), resumable, safetensors out
    ropelab lab                              # evaluate the committed models, methods, fine-tuning
    ropelab lab --train                      # rebuild the models with the committed recipe first

The lab is a client of the library: method names come from :mod:`ropelab.registry`, rows are stamped
by :mod:`ropelab.report.provenance`, fine-tuning runs through :mod:`ropelab.finetune`.

Modules, one job each: ``data`` (the stdlib corpus, its split, batches and held-out windows),
``model`` (the decoder; the encoding is a constructor argument), ``recipe`` (how a lab model is
trained), ``training`` (``ropelab train``: train and record), ``checkpoints`` (safetensors with the
config as metadata), ``evaluate`` (loss by position, two views), ``methods`` (the length policy of
the zero-shot methods), ``config`` (:class:`LabConfig`), ``records`` (provenance and resume keys of
the rows), ``units`` / ``plan`` / ``experiment`` (the resumable lab job), ``zero_shot`` and
``finetuning`` (the two measurements), ``tables``, ``claims``, ``plots`` and ``report``
(:func:`render_report`: everything from the rows alone).
"""

from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint
from ropelab.lab.config import LabConfig
from ropelab.lab.experiment import Lab, LabOutcome, run_lab
from ropelab.lab.model import ModelConfig, TinyDecoder
from ropelab.lab.recipe import LAB_ENCODINGS, LAB_RECIPE, TrainRecipe, train_model
from ropelab.lab.report import render_report, write_report
from ropelab.lab.training import train_and_record

__all__ = [
    "LAB_ENCODINGS",
    "LAB_RECIPE",
    "PACKAGE_CHECKPOINTS",
    "Lab",
    "LabConfig",
    "LabOutcome",
    "ModelConfig",
    "TinyDecoder",
    "TrainRecipe",
    "load_checkpoint",
    "render_report",
    "run_lab",
    "train_and_record",
    "train_model",
    "write_report",
]
