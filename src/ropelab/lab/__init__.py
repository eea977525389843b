"""The lab: tiny byte-level decoders trained short with each position encoding and tested long.

    ropelab train --encoding rope            # one model (recipe.py), resumable, safetensors out
    ropelab lab                              # evaluate the committed models, methods, fine-tuning
    ropelab lab --train                      # rebuild the models with the committed recipe first

Modules: ``data`` (the stdlib corpus, its split, batches and held-out windows), ``model`` (the
decoder; the encoding is a constructor argument), ``recipe`` (how a lab model is trained),
``checkpoints`` (safetensors with the config as metadata), ``evaluate`` (loss by position, two
views), ``methods`` (the zero-shot methods and their length policy), ``experiment`` (the
resumable lab job) and ``report`` (tables, plots, claims).
"""

from ropelab.lab.experiment import Lab, LabConfig, run_lab
from ropelab.lab.model import ModelConfig, TinyDecoder
from ropelab.lab.recipe import LAB_ENCODINGS, LAB_RECIPE, TrainRecipe, train_model

__all__ = [
    "LAB_ENCODINGS",
    "LAB_RECIPE",
    "Lab",
    "LabConfig",
    "ModelConfig",
    "TinyDecoder",
    "TrainRecipe",
    "run_lab",
    "train_model",
]
