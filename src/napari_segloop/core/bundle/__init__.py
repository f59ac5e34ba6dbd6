"""Model bundles: a network plus everything needed to reproduce its predictions.

* :mod:`.settings` the ``segloop.json`` schema (normalisation, tiling, threshold, ...);
* :mod:`.model` :class:`ModelBundle`, a loaded network with its settings;
* :mod:`.weights` safe reading of safetensors and plain state dicts;
* :mod:`.folder` bundle folders: save (atomic, never silently over another), load,
  settings updates.

Which networks can be built is the model registry's job
(:mod:`napari_segloop.core.models`).
"""

from napari_segloop.core.bundle.folder import (
    default_model_path,
    load_bundle,
    load_model,
    load_state_dict_model,
    read_bundle_settings,
    save_bundle,
    save_bundle_as,
    set_bundle_threshold,
)
from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.bundle.settings import (
    CONFIG_FILE,
    FORMAT_VERSION,
    SETTINGS_FILE,
    STATE_DICT_SUFFIXES,
    WEIGHTS_FILE,
    BundleSettings,
    Normalization,
    PostProcess,
)
from napari_segloop.core.bundle.weights import load_weights
from napari_segloop.core.models.registry import architectures, create_model

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "SETTINGS_FILE",
    "STATE_DICT_SUFFIXES",
    "WEIGHTS_FILE",
    "BundleSettings",
    "ModelBundle",
    "Normalization",
    "PostProcess",
    "architectures",
    "create_model",
    "default_model_path",
    "load_bundle",
    "load_model",
    "load_state_dict_model",
    "load_weights",
    "read_bundle_settings",
    "save_bundle",
    "save_bundle_as",
    "set_bundle_threshold",
]
