"""A trained Adaptor in a researcher's hands: export it as one folder, load it, embed and score new inputs.

It sits above the stages, like the study runner: it loads backbones and decodes images through
the extract stage's public functions, the Adaptor and its checkpoints through train's, prompt
sets and scoring through evaluate's, and writes stores through cache_schema. `adaptor export`
and `adaptor predict embed|zeroshot|retrieve` are its command line.
"""
from adaptor_vlp.inference.backbones import BackboneMismatch, LiveBackbone, load_live_backbone
from adaptor_vlp.inference.inputs import ImageInput, Unreadable
from adaptor_vlp.inference.model import AdaptorModel, ImageEmbeddings, ZeroShotScores, resolve_prompts
from adaptor_vlp.inference.record import ModelFolderError, ModelRecord

__all__ = ["AdaptorModel", "BackboneMismatch", "ImageEmbeddings", "ImageInput", "LiveBackbone", "ModelFolderError",
           "ModelRecord", "Unreadable", "ZeroShotScores", "load_live_backbone", "resolve_prompts"]
