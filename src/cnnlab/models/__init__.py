"""Architectures: one file per family, all behind `build_backbone`."""

from cnnlab.models.base import Backbone
from cnnlab.models.registry import available_models, build_backbone, model_spec, register_architecture

__all__ = ["Backbone", "available_models", "build_backbone", "model_spec", "register_architecture"]
