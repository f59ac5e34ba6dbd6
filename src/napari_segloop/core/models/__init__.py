"""Which networks segloop can build: the allow-listed model registry (see :mod:`.registry`)."""

from napari_segloop.core.models.registry import (
    ModelSpec,
    architectures,
    build_model,
    create_model,
    get_spec,
    input_multiple,
    probabilities,
    register,
    spec_name,
)

__all__ = [
    "ModelSpec",
    "architectures",
    "build_model",
    "create_model",
    "get_spec",
    "input_multiple",
    "probabilities",
    "register",
    "spec_name",
]
