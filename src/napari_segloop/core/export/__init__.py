"""Models that travel: a bundle as a bioimage.io package, ONNX, TorchScript or a ``torch.export`` program.

:func:`export_model` is the one entry point the CLI (``segloop export``) and
the Model dock use. It is a generator: it yields
:class:`~napari_segloop.core.events.Progress` and returns an
:class:`~napari_segloop.core.export.bioimageio_package.ExportResult`, whose
``parity`` is the largest probability difference of the written file against
the PyTorch model on the sample (an export above
:data:`~napari_segloop.core.export.bioimageio_package.PARITY_TOLERANCE` is
refused and nothing is written).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import Notice, Progress
from napari_segloop.core.export.bioimageio_package import (
    PARITY_TOLERANCE,
    ExportResult,
    export_bioimageio,
)
from napari_segloop.core.export.metadata import Author, Citation, ExportMeta
from napari_segloop.core.text import printable

__all__ = ["FORMATS", "SUFFIXES", "Author", "Citation", "ExportMeta", "ExportResult", "export_model"]

#: The formats, as ``segloop export --format`` names them, with what each is for.
FORMATS: dict[str, str] = {
    "bioimageio": "bioimage.io model package (.zip): Fiji/DeepImageJ, ilastik, QuPath, the model zoo",
    "onnx": "ONNX graph (.onnx): onnxruntime and every ONNX tool",
    "torchscript": "TorchScript (.pt): PyTorch without segloop (deprecated by torch, still widely read)",
    "torch-export": "torch.export program (.pt2): what torch recommends now",
}
#: The file suffix each format writes.
SUFFIXES = {"bioimageio": ".zip", "onnx": ".onnx", "torchscript": ".pt", "torch-export": ".pt2"}


def export_model(
    bundle: ModelBundle,
    fmt: str,
    output: str | os.PathLike,
    meta: ExportMeta | None = None,
    image: Any = None,
    *,
    overwrite: bool = False,
    run_test: bool = True,
    **prepare: Any,
) -> Generator[Progress | Notice, None, ExportResult]:
    """Export ``bundle`` in format ``fmt`` to ``output`` (atomically; never over a file silently).

    Parameters
    ----------
    bundle : ModelBundle
        The model (not modified).
    fmt : {"bioimageio", "onnx", "torchscript", "torch-export"}
    output : path
        The file to write (its suffix must be the format's, :data:`SUFFIXES`).
    meta : ExportMeta, optional
        bioimage.io only: name, authors, licence, citations.
    image : array-like, optional
        The sample the export is checked on (default: the bundle's training
        image, or the synthetic nuclei sample).
    overwrite : bool
        Replace an existing file.
    run_test : bool
        bioimage.io only: run ``bioimageio.core``'s model test on the package.
    **prepare
        Channel options for the sample (``channel_axis``, ``rgb``, ``convert``, ``channel``).

    Raises
    ------
    ModelLoadError
        Unknown format, wrong suffix, existing output, an export that fails or
        whose output differs from the PyTorch model.
    """
    if fmt not in FORMATS:
        raise ModelLoadError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    output = Path(output)
    if output.suffix.lower() != SUFFIXES[fmt]:
        raise ModelLoadError(f"A {fmt} export is a {SUFFIXES[fmt]} file; got {printable(output.name)}.")
    if fmt == "bioimageio":
        return (yield from export_bioimageio(bundle, output, meta, image, overwrite=overwrite,
                                             run_test=run_test, **prepare))
    if output.exists() and not overwrite:
        raise ModelLoadError(f"{printable(output)} already exists; choose another name or allow "
                             "overwriting (--overwrite).")
    return (yield from _export_weights(bundle, fmt, output, image, **prepare))


def _export_weights(bundle: ModelBundle, fmt: str, output: Path, image: Any,
                    **prepare: Any) -> Generator[Progress | Notice, None, ExportResult]:
    import tempfile

    from napari_segloop.core.export.bioimageio_package import probability_gaps
    from napari_segloop.core.export.onnx_weights import OnnxNetwork, export_onnx
    from napari_segloop.core.export.sample import choose_sample
    from napari_segloop.core.export.shapes import min_side
    from napari_segloop.core.export.torch_weights import (
        export_program,
        export_torchscript,
        load_program,
        load_torchscript,
    )
    from napari_segloop.core.io.atomic import atomic_path

    multiple = bundle.input_multiple
    yield Progress(0, 3, "choosing the sample")
    side = max(min_side(multiple), min(int(bundle.settings.tile_size), 256))
    sample = choose_sample(bundle, side - side % multiple, multiple, image, **prepare)
    yield Progress(1, 3, f"exporting {fmt}")
    # Written next to the output first: the parity check runs on the very file that is kept.
    with tempfile.TemporaryDirectory(prefix="segloop-export-") as work:
        tmp = Path(work) / f"model{SUFFIXES[fmt]}"
        if fmt == "onnx":
            export_onnx(bundle.model, tmp, bundle.in_channels, multiple)
            runner: Any = OnnxNetwork(tmp, bundle.config, multiple)
        elif fmt == "torchscript":
            export_torchscript(bundle.model, tmp, bundle.in_channels, multiple)
            runner = load_torchscript(tmp, allow_code=True)
        else:
            export_program(bundle.model, tmp, bundle.in_channels, multiple)
            runner = load_program(tmp)
        yield Progress(2, 3, "checking it against the PyTorch model")
        parity = probability_gaps(bundle, {fmt: runner}, sample.raw, multiple)
        del runner
        gap = parity[fmt]
        if not gap <= PARITY_TOLERANCE:
            raise ModelLoadError(f"The {fmt} export differs from the PyTorch model by {gap:.2g} "
                                 f"(more than {PARITY_TOLERANCE:g}); nothing was written.")
        try:
            with atomic_path(output) as final:
                import shutil

                shutil.copyfile(tmp, final)
        except OSError as exc:
            raise ModelLoadError(f"Could not write {printable(output)}: {exc.strerror or exc}") from exc
    yield Progress(3, 3, "done")
    notes = [f"Checked on {sample.origin}."]
    if fmt in ("onnx", "torchscript", "torch-export"):
        activation = "sigmoid" if bundle.classes == 1 else "softmax over the channels"
        notes.append(f"The file computes logits: apply a {activation} to get probabilities "
                     f"(threshold {bundle.settings.threshold:g}); normalise inputs as segloop does "
                     "(see docs/sharing.md).")
    return ExportResult(output, parity, notes)
