"""Screenshot of the docs: the Model dock's "New model" form with a preset, and the created model.

Opens the segloop panel with the synthetic nuclei sample, picks the preset
"Attention VGG-UNet3+" in "New model", creates it, and saves the whole window
(1600 x 1000) as ``new_model_preset.png``: the form, and the model table with
architecture, encoder, parameters (encoder share), input multiple and what
is frozen.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_new_model.py [docs/images]
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_segloop.demo import demo_panel, wait_until

TIMEOUT = 600.0


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.sample_data import synthetic_nuclei

    out = Path(argv[0] if argv else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-segloop: a new model by the name you know")
    viewer.window.resize(1600, 1000)
    (image, image_meta, _), _ = synthetic_nuclei()
    viewer.add_image(image, **image_meta)
    _, panel = demo_panel(viewer)
    dock = panel.model_dock
    dock.new_section.expand(animate=False)
    dock.new_form.preset_combo.setCurrentText("Attention VGG-UNet3+")
    dock.create_new()
    if not (wait_until(lambda: not dock.session.busy, TIMEOUT) and dock.session.bundle is not None):
        print("screenshot_new_model: the model was not created", file=sys.stderr)
        return 1
    wait_until(lambda: False, 1.0)
    viewer.screenshot(str(out / "new_model_preset.png"), canvas_only=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
