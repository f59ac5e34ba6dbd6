"""Exported models on real images: ONNX/TorchScript/state dict of a bioimage.io package against segloop.

Exports the default model once as a bioimage.io package (tested by bioimageio.core), imports it
with each weight format, and on each real image prints the largest probability difference of the
imported model against the original through segloop's tiler. Then bioimageio.core's own
prediction of the whole image: as a consumer runs it (the input padded by the output halo,
reflected), the largest difference more than 64 px from the border, the mean difference and the
share of mask pixels that differ at the model's threshold; and without that padding. Images:
see docs/finetuning_quality.md, "How to repeat" (they are written to /tmp/ftq/data).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/check_export_real.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from napari_segloop.core.bundle import load_model
from napari_segloop.core.events import run_to_end
from napari_segloop.core.export import export_model
from napari_segloop.core.inference.predict import predict_array

DATA = Path("/tmp/ftq/data")
IMAGES = {  # name: (file, plane of a stack, invert)
    "StarDist nuclei (fluorescence)": ("stardist_img2d.tif", None, False),
    "E. coli (phase contrast)": ("ecoli_phase_t19.tif", None, True),
    "BBBC007 (fluorescence, Drosophila)": ("bbbc007_POS0008.tif", None, False),
    "CHO nuclei (3-D, plane 2)": ("cho3d_t0.tif", 2, False),
}


def main() -> int:
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_model_description
    from bioimageio.spec.model.v0_5 import TensorId

    if not DATA.is_dir():
        print(f"{DATA} is missing: run the 'How to repeat' step of docs/finetuning_quality.md first")
        return 1
    bundle = load_model("default")
    first = tifffile.imread(DATA / IMAGES["StarDist nuclei (fluorescence)"][0])
    with tempfile.TemporaryDirectory() as work:
        package = Path(work) / "default.zip"
        result = run_to_end(export_model(bundle, "bioimageio", package, image=first))
        print(f"package: parity {result.parity}, bioimage.io model test {result.test}")
        imported = {w: load_model(package, weights=w, allow_torchscript=True)
                    for w in ("pytorch_state_dict", "onnx", "torchscript")}
        pipeline = create_prediction_pipeline(load_model_description(package, perform_io_checks=False),
                                              weight_format="pytorch_state_dict")
        t = bundle.settings.threshold
        print("| image | size | state dict | ONNX | TorchScript | bioimageio.core: max > 64 px from "
              "the border | mean | mask pixels differing | without the halo padding |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, (file, plane, invert) in IMAGES.items():
            image = tifffile.imread(DATA / file)
            if plane is not None:
                image = image[plane]
            # bioimageio.core takes only sides of min + n * step (here multiples of 32): crop to them.
            step = bundle.input_multiple
            image = image[: image.shape[0] // step * step, : image.shape[1] // step * step]
            image = image.astype(np.float32)
            if invert:
                image = image.max() - image
            ref = predict_array(bundle, image, device="cpu")
            gaps = [float(np.abs(predict_array(b, image, device="cpu") - ref).max())
                    for b in imported.values()]
            ref = predict_array(bundle, image, device="cpu", tile_size=max(image.shape))  # one tile
            runs = []
            for skip in (False, True):
                sample = Sample(members={TensorId("input"): Tensor(image[None, None],
                                                                  dims=("batch", "channel", "y", "x"))},
                                stat={}, id=name)
                out = pipeline.predict_sample_without_blocking(
                    sample, skip_input_padding=skip, skip_output_cropping=skip)
                runs.append(out.members[TensorId("probability")].data.values[0, 0])
            gap = np.abs(runs[0] - ref)
            masks = float(np.mean((runs[0] > t) != (ref > t)))
            print(f"| {name} | {image.shape[0]}x{image.shape[1]} | "
                  + " | ".join(f"{g:.1e}" for g in gaps)
                  + f" | {gap[64:-64, 64:-64].max():.1e} | {gap.mean():.1e} | {100 * masks:.2f} % | "
                  f"{np.abs(runs[1] - ref).max():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
