"""Bundle folders on disk: save (atomically, never silently over another bundle), load, and settings updates.

A bundle is a folder::

    my-model/
      config.json         the architecture (registry name + init kwargs)
      model.safetensors   the weights (float32, or float16 to save space)
      segloop.json        channels, normalisation, scale, tiling, threshold,
                          post-processing and provenance
      README.md           model card written by smp (informational only)

Loading never touches the network (the network is rebuilt from the registry
with no pretrained weights, then filled from the file) and never executes code
from a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_segloop.core.bundle.jsonfile import check_regular_file, read_json_object
from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.bundle.settings import (
    CONFIG_FILE,
    FORMAT_VERSION,
    SETTINGS_FILE,
    STATE_DICT_SUFFIXES,
    WEIGHTS_FILE,
    BundleSettings,
)
from napari_segloop.core.bundle.weights import (
    _read_state_dict,
    _safetensors_load,
    expect_shapes,
    load_weights,
    read_safetensors_header,
)
from napari_segloop.core.errors import BundleExistsError, ModelLoadError
from napari_segloop.core.io.atomic import atomic_folder, atomic_path
from napari_segloop.core.masks import PostProcess
from napari_segloop.core.models.registry import build_model, create_model, write_model_files
from napari_segloop.core.text import printable


def _provenance_defaults() -> dict[str, Any]:
    import numpy
    import segmentation_models_pytorch as smp
    import torch

    from napari_segloop import __version__

    return {
        "segloop_version": __version__,
        "torch_version": torch.__version__,
        "smp_version": smp.__version__,
        "numpy_version": numpy.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_bundle(
    bundle: ModelBundle,
    folder: str | os.PathLike,
    dtype: str = "float32",
    *,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a bundle folder atomically.

    The bundle is written to a temporary sibling folder first and swapped in
    with renames, so an interrupted or failed save never leaves a
    half-written bundle and never destroys the previous one.

    Parameters
    ----------
    bundle : ModelBundle
        The model and settings to write.
    folder : path
        Destination folder (created; an existing one only with ``overwrite``).
    dtype : {"float32", "float16"}
        Storage precision of the weights. float16 halves the file; weights are
        cast back to float32 when loaded.
    overwrite : bool
        Replace an existing bundle folder (atomically: the old one stays
        intact until the new one is complete). Without it an existing path
        is refused, so no bundle is ever overwritten silently.
    extra : callable, optional
        Called with the temporary folder once the model files are in it, to
        add files that must appear together with the bundle (the training
        labels of a trained model); what it writes is part of the atomic swap.

    Raises
    ------
    BundleExistsError
        If ``folder`` exists and ``overwrite`` is False.
    ModelLoadError
        If the folder cannot be written (the message says why), or it is the
        built-in default model.

    Returns
    -------
    Path
        The destination folder.
    """
    import copy

    import torch
    from safetensors import SafetensorError

    folder = Path(folder)
    if dtype not in ("float32", "float16"):
        raise ValueError("dtype must be 'float32' or 'float16'")
    if folder.exists() and folder.resolve() == default_model_path().resolve():
        raise ModelLoadError("The built-in default model is read-only: save under another name.")
    if folder.exists() and not overwrite:
        raise BundleExistsError(f"{folder} already exists; choose another name or allow overwriting.")
    if folder.exists() and not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a bundle folder; choose another name.")
    bundle.settings.validate("bundle settings")
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"Could not save the model to {folder}: {exc.strerror or exc}") from exc
    settings = copy.deepcopy(bundle.settings)
    prov = _provenance_defaults()
    prov.update({k: v for k, v in settings.provenance.items() if k not in ("saved_at",)})
    prov["weights_dtype"] = dtype
    settings.provenance = prov
    try:
        # A save that was killed left hidden folders of our naming: atomic_folder removes them.
        with atomic_folder(folder) as tmp:
            model = bundle.model
            if dtype == "float16":
                model = copy.deepcopy(model).to(dtype=torch.float16)
            write_model_files(model, tmp)
            with open(tmp / SETTINGS_FILE, "w", encoding="utf-8") as fh:
                json.dump(settings.to_json(), fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            if extra is not None:
                extra(tmp)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as SafetensorError
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ModelLoadError(f"Could not save the model to {folder}: {reason}") from exc
    bundle.settings.provenance = prov
    return folder


#: Largest ``config.json`` read (a real one is under 1 kB).
MAX_CONFIG_BYTES = 1_000_000
#: Largest ``segloop.json`` read (provenance history grows, slowly).
MAX_SETTINGS_BYTES = 16_000_000


def _read_json(path: Path, max_bytes: int = MAX_SETTINGS_BYTES) -> dict[str, Any]:
    return read_json_object(path, max_bytes, "settings file" if path.name == SETTINGS_FILE
                            else "bundle file")


def _inside(folder: Path, path: Path, what: str) -> None:
    """Refuse a bundle file that is a link to a file outside the bundle folder."""
    try:
        real, root = path.resolve(strict=True), folder.resolve(strict=True)
    except OSError:
        return  # dangling: check_regular_file says so
    if root != real.parent and root not in real.parents:
        raise ModelLoadError(
            f"{printable(path)}: the {what} is a link to {printable(real)}, outside the bundle "
            "folder; a bundle may only contain its own files."
        )


def _bundle_file(folder: Path, name: str, what: str, required: bool = True) -> Path | None:
    path = folder / name
    if not required and not path.exists() and not path.is_symlink():
        return None
    if not path.exists() and not path.is_symlink():
        raise ModelLoadError(f"{printable(folder)} is not a model bundle: {name} is missing.")
    check_regular_file(path, what)
    _inside(folder, path, what)
    return path


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load a bundle folder (or a plain smp ``save_pretrained`` folder).

    A bundle is data only: its ``config.json`` passes the allow-list of
    :mod:`napari_segloop.core.models.options` (no file names, no URLs, no
    hub names, sizes in range); the network's shapes are compared with the
    weight file's header before the network is built; every file must be a
    regular file inside the folder.

    Parameters
    ----------
    path : path
        The bundle folder.

    Returns
    -------
    ModelBundle
        With the model in eval mode on the CPU.

    Raises
    ------
    ModelLoadError
        If the folder is missing, incomplete, corrupt, refused by the
        allow-list, or its weights do not fit its architecture.
    """
    folder = Path(path)
    shown = printable(folder)
    if not folder.exists():
        raise ModelLoadError(f"Model not found: {shown} does not exist.")
    if not folder.is_dir():
        raise ModelLoadError(f"{shown} is not a bundle folder.")
    config_path = _bundle_file(folder, CONFIG_FILE, "architecture file (config.json)")
    weights_path = _bundle_file(folder, WEIGHTS_FILE, "weights file")
    settings_path = _bundle_file(folder, SETTINGS_FILE, "settings file", required=False)
    config = read_json_object(config_path, MAX_CONFIG_BYTES, "architecture file (config.json)")
    class_name = config.pop("_model_class", None)
    if class_name is None:
        raise ModelLoadError(f"{printable(config_path)} does not name a model class (_model_class).")
    if not isinstance(class_name, str):
        raise ModelLoadError(f"{printable(config_path)}: _model_class must be an architecture name.")
    # Settings first: a bad segloop.json is reported before any network is built.
    if settings_path is not None:
        settings = BundleSettings.from_json(_read_json(settings_path), printable(settings_path))
    else:
        settings = None
    shapes = read_safetensors_header(weights_path)
    notes: list[str] = []
    # Never download: build_model forces encoder_weights=None; the weights come from the file.
    try:
        model = build_model(class_name, config, expected=expect_shapes(shapes, str(weights_path)),
                            notes=notes)
    except ModelLoadError as exc:
        text = str(exc)
        raise ModelLoadError(
            text if text.startswith("The weights in") else f"{printable(config_path)}: {text}"
        ) from exc
    load_weights(model, _safetensors_load(weights_path), str(weights_path))
    model.eval()
    n_in = int(getattr(model, "config", {}).get("in_channels", config.get("in_channels", 3)))
    if settings is None:
        settings = BundleSettings(channel_names=[f"channel {i}" for i in range(n_in)])
    if len(settings.channel_names) != n_in:
        raise ModelLoadError(
            f"{printable(settings_path)} names {len(settings.channel_names)} channels but the "
            f"network expects {n_in}."
        )
    return ModelBundle(model=model, settings=settings, source=str(folder), notes=notes)


def load_state_dict_model(
    path: str | os.PathLike,
    architecture: str,
    encoder: str,
    in_channels: int = 1,
    classes: int = 1,
    settings: BundleSettings | None = None,
    **model_kwargs: Any,
) -> ModelBundle:
    """Load a plain PyTorch state dict into a freshly built smp model.

    Parameters
    ----------
    path : path
        A ``.pt``/``.pth``/``.ckpt``/``.bin`` file (read with
        ``weights_only=True``) or a ``.safetensors`` file.
    architecture, encoder, in_channels, classes, **model_kwargs
        The architecture the weights were trained with.
    settings : BundleSettings, optional
        Settings to attach (defaults otherwise).
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ModelLoadError(f"Model file not found: {printable(p)}.")
    check_regular_file(p, "weights file")
    state = _read_state_dict(p)
    bundle = create_model(architecture, encoder, in_channels, classes, None, settings, **model_kwargs)
    load_weights(bundle.model, state, str(p))
    bundle.model.eval()
    bundle.source = str(p)
    return bundle


def default_model_path() -> Path:
    """Folder of the built-in default model shipped in the package."""
    return Path(__file__).resolve().parents[2] / "models" / "default"


def load_model(
    spec: str | os.PathLike,
    architecture: str | None = None,
    encoder: str | None = None,
    in_channels: int = 1,
    classes: int = 1,
    *,
    weights: str = "auto",
    allow_torchscript: bool = False,
) -> ModelBundle:
    """Load ``"default"``, a bundle folder, a state dict file or a bioimage.io package.

    A state dict needs ``architecture`` and ``encoder``. A bioimage.io package
    (a ``.zip``, a ``rdf.yaml``, or a folder holding one) is read by
    :func:`napari_segloop.core.bundle.from_bioimageio.load_bioimageio` with
    ``weights`` and ``allow_torchscript``.
    """
    if str(spec) == "default":
        path = default_model_path()
        if not (path / WEIGHTS_FILE).is_file():
            raise ModelLoadError(
                "The built-in default model is missing from this installation "
                f"({path}); reinstall napari-segloop."
            )
        bundle = load_bundle(path)
        bundle.source = "default"
        return bundle
    p = Path(spec)
    if not p.exists():
        raise ModelLoadError(f"Model not found: {p} does not exist.")
    from napari_segloop.core.bundle.from_bioimageio import is_bioimageio_source, load_bioimageio

    if is_bioimageio_source(p) and not (p.is_dir() and (p / CONFIG_FILE).is_file()):
        return load_bioimageio(p, weights, allow_torchscript=allow_torchscript)
    if p.is_dir():
        return load_bundle(p)
    if p.suffix.lower() in STATE_DICT_SUFFIXES:
        if not architecture or not encoder:
            raise ModelLoadError(
                f"{p} is a plain state dict: give the architecture and encoder it was "
                "trained with (for example --arch Unet --encoder resnet18)."
            )
        return load_state_dict_model(p, architecture, encoder, in_channels, classes)
    raise ModelLoadError(
        f"{p} is neither a bundle folder, a bioimage.io package (.zip) nor a state dict file "
        f"({', '.join(STATE_DICT_SUFFIXES)})."
    )


# ----------------------------------------------------------------------------- settings updates


def _settings_path(bundle_path: str | os.PathLike) -> Path:
    if str(bundle_path) == "default":
        return default_model_path() / SETTINGS_FILE
    return Path(bundle_path) / SETTINGS_FILE


def read_bundle_settings(bundle_path: str | os.PathLike):
    """Read the settings (threshold, post-processing, ...) of a bundle without loading the network.

    Parameters
    ----------
    bundle_path : path or "default"
        A bundle folder, or ``"default"`` for the built-in model.

    Returns
    -------
    BundleSettings
        Defaults when a model folder has no ``segloop.json``.

    Raises
    ------
    ModelLoadError
        If it is not a bundle folder or its settings file is invalid.
    """
    path = _settings_path(bundle_path)
    folder = path.parent
    if str(bundle_path) == "default" and not folder.is_dir():
        raise ModelLoadError(f"The built-in default model is missing from this installation ({folder}); "
                             "reinstall napari-segloop or give a bundle folder.")
    if not folder.is_dir():
        raise ModelLoadError(f"{bundle_path} is not a model bundle folder (threshold settings are "
                             "stored in bundles only).")
    if not path.exists() and not path.is_symlink():
        if (folder / CONFIG_FILE).is_file():
            return BundleSettings()
        raise ModelLoadError(f"{printable(folder)} is not a model bundle: {path.name} is missing.")
    _bundle_file(folder, SETTINGS_FILE, "settings file")
    return BundleSettings.from_json(_read_json(path), printable(path))


def set_bundle_threshold(bundle_path: str | os.PathLike, threshold: float, postprocess: Any = None):
    """Store a threshold (and post-processing) in a bundle's ``segloop.json``, atomically.

    The file is rewritten through a temporary file and a rename, so an
    interrupted save leaves the previous file intact. Other settings and
    unknown keys are kept; the change is appended to the provenance history.
    ``segloop predict --threshold auto`` then reproduces what the GUI showed.

    Parameters
    ----------
    bundle_path : path
        The bundle folder (the built-in default model is read-only).
    threshold : float
        In [0, 1]; foreground where probability > threshold.
    postprocess : PostProcess, optional
        New post-processing; None keeps the stored one.

    Returns
    -------
    BundleSettings
        The settings now stored (assign them to the loaded bundle too).

    Raises
    ------
    ModelLoadError
        Not a bundle, the default model, invalid values, or the file cannot be written.
    """
    path = _settings_path(bundle_path)
    folder = path.parent
    if str(bundle_path) == "default" or (
        folder.exists() and folder.resolve() == default_model_path().resolve()
    ):
        raise ModelLoadError("The built-in default model is read-only: save it as a bundle of your "
                             "own first, then store the threshold there.")
    if not folder.is_dir() or not (folder / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{folder} is not a model bundle folder ({CONFIG_FILE} is missing).")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ModelLoadError(f"The threshold {threshold:g} is outside [0, 1].")
    present = _bundle_file(folder, SETTINGS_FILE, "settings file", required=False)
    raw: dict[str, Any] = _read_json(path) if present else BundleSettings().to_json()
    settings = BundleSettings.from_json(raw, str(path))
    pp = settings.postprocess if postprocess is None else postprocess
    if not isinstance(pp, PostProcess):
        raise ModelLoadError("postprocess must be a PostProcess.")
    settings = replace(settings, threshold=threshold, postprocess=pp)
    settings.validate(str(path))
    new = settings.to_json()
    prov = dict(raw.get("provenance") or {})
    history = list(prov.get("history") or [])
    history.append({"event": "threshold", "threshold": threshold,
                    "postprocess": new["postprocess"], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    prov["history"] = history
    new["provenance"] = prov
    # Keep keys this version does not know (newer minor versions), overwrite the rest.
    merged = {**raw, **new, "format_version": max(int(raw.get("format_version", 1)), FORMAT_VERSION)}
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(merged, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ModelLoadError(f"Could not save the threshold to {path}: {exc.strerror or exc}") from exc
    settings.provenance = prov
    return settings


def save_bundle_as(
    bundle: ModelBundle,
    folder: str | os.PathLike,
    *,
    threshold: float | None = None,
    postprocess: PostProcess | None = None,
    overwrite: bool = False,
    dtype: str | None = None,
) -> ModelBundle:
    """Save a loaded model (the default one, a new one, a loaded bundle) as a new bundle folder.

    What ``Save model as...`` in the Model dock runs. The weights and settings
    are copied; ``threshold`` and ``postprocess`` (the mask the user chose in
    the Threshold dock) replace the stored ones, so that
    ``segloop predict --model FOLDER --threshold auto`` gives that mask. The
    history records where the model came from.

    Parameters
    ----------
    bundle : ModelBundle
        The model to save (not modified).
    folder : path
        The new bundle folder.
    threshold, postprocess : optional
        New default threshold and post-processing.
    overwrite : bool
        Replace an existing folder (the user said yes); otherwise refused.
    dtype : {"float32", "float16"}, optional
        Weight precision; default: the precision the weights were stored in
        (float16 weights stay float16: saving them again is lossless).

    Returns
    -------
    ModelBundle
        The same network with the new settings and ``source`` = the folder.
    """
    import copy

    settings = copy.deepcopy(bundle.settings)
    if threshold is not None:
        settings.threshold = float(threshold)
    if postprocess is not None:
        settings.postprocess = copy.deepcopy(postprocess)
    settings.validate("the model's settings")
    prov = dict(settings.provenance)
    history = list(prov.get("history") or [])
    history.append({"event": "saved as", "from": str(bundle.source), "threshold": settings.threshold,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    prov["history"] = history
    prov["parent"] = str(bundle.source)
    settings.provenance = prov
    if dtype is None:
        dtype = "float16" if prov.get("weights_dtype") == "float16" else "float32"
    new = ModelBundle(model=bundle.model, settings=settings, source=str(folder))
    save_bundle(new, folder, dtype=dtype, overwrite=overwrite)
    return new
