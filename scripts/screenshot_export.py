"""Screenshot of the docs: the Model dock's "Export for other tools" after a bioimage.io export.

Opens napari with the synthetic nuclei sample and the default model, fills in the bioimage.io
fields, exports a package (checked against the model and tested by bioimageio.core) into a
temporary folder and saves the whole window (1600 x 1000) as ``export_dock.png``.

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_export.py [docs/images]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from napari_segloop.demo import demo_panel, wait_until

TIMEOUT = 600.0


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.core.bundle import load_model
    from napari_segloop.sample_data import synthetic_nuclei

    out = Path(argv[0] if argv else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-segloop: export for other tools")
    viewer.window.resize(1600, 1000)
    (image, meta, _), _ = synthetic_nuclei()
    viewer.add_image(image, **meta)
    _, panel = demo_panel(viewer)
    dock = panel.model_dock
    dock.session.set_model(load_model("default"))
    for title in ("Predict", "Threshold"):
        if panel.section(title) is not None:
            panel.section(title).collapse()
    dock.export_section.expand(animate=False)
    dock.export_name.setText("Nuclei - synthetic fluorescence")
    dock.export_description.setText("Nuclei in fluorescence images (segloop's default model)")
    dock.export_authors.setText("Ada Lovelace; Institute of Engines; 0000-0002-1825-0097")
    with tempfile.TemporaryDirectory() as work:
        if not dock.export_to(str(Path(work) / "nuclei.zip"), "bioimageio") or not wait_until(
                lambda: not dock.session.busy, TIMEOUT):
            print("screenshot_export: the export did not run", file=sys.stderr)
            return 1
    print(dock.status.text())
    wait_until(lambda: False, 1.5)
    viewer.screenshot(str(out / "export_dock.png"), canvas_only=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
