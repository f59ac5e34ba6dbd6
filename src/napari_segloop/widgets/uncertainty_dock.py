"""The Uncertainty dock: where is the model unsure, and take me there to paint.

A view over :func:`napari_segloop.core.active.uncertainty` and
:func:`napari_segloop.core.active.rank_regions`, run in a thread worker:

* **Compute** writes ``<image> uncertainty`` (an Image layer, magma) and
  ``<image> regions`` (a Shapes layer with the top-ranked squares, each
  labelled with its rank). Regions that already hold annotations in the
  chosen labels layer are left out (see :mod:`napari_segloop.core.active.regions`).
* **Next region** moves the camera (and the slice, for stacks) to the next
  most uncertain region not annotated yet, outlines it, and selects the
  scribble layer in paint mode (making one if there is none), so the user can
  paint at once.
* After a training run (the session's model changes) the ranking is computed
  again with the new model when "refresh after training" is on.

The worker reads the image and the labels; the dock only reads the labels
inside one region (to skip it when the user painted there since the ranking).
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segloop.core.errors import SegloopError
from napari_segloop.core.events import Notice, Progress
from napari_segloop.widgets import layer_io
from napari_segloop.widgets.finetune_dock import SCRIBBLE_ROLE, add_scribble_layer
from napari_segloop.widgets.jobs import (
    JobFailed,
    ModelReady,
    create_job_worker,
    notify,
    read_and_load,
    show_progress,
)
from napari_segloop.widgets.large_layers import is_large_array
from napari_segloop.widgets.outputs import _add_keeping_selection, ensure_image, find_output, role_of
from napari_segloop.widgets.pickers import LayerChoice, is_labels, is_user_image
from napari_segloop.widgets.session import METADATA_KEY, camera_of, session_for, unwrap

UNCERTAINTY_ROLE, REGIONS_ROLE = "uncertainty", "regions"
METHOD_LABELS = {"entropy": "entropy (1 pass)", "tta": "flips and rotations (4 passes)",
                 "mc-dropout": "Monte-Carlo dropout (8 passes)",
                 "ensemble": "ensemble disagreement (the Predict dock's checked models)"}
NO_LABELS = "__none__"
#: Outline colours of the regions (Okabe-Ito orange) and of the one shown (white).
REGION_COLOUR, CURRENT_COLOUR = "#E69F00", "#FFFFFF"


def uncertainty_job(bundle: Any, data: Any, options: Any, method: str, side: int, labels: Any,
                    mode: str, slice_index: tuple[int, ...] | None,
                    members: tuple[Any, ...] = ()) -> Generator[Any, None, Any]:
    """The worker's generator: read the image, load the default model if needed, compute and rank.

    ``members``: the other models of an ensemble (method ``ensemble``; ``bundle`` is the first).
    """
    from napari_segloop.core.active import rank_regions, uncertainty

    bundle, data = yield from read_and_load(bundle, data)
    result = yield from uncertainty(bundle, data, options, method, members=members)
    if labels is not None:
        labels = np.asarray(labels if slice_index is None else labels[slice_index])
    yield Progress(0, 0, "ranking the regions")
    regions = rank_regions(result.uncertainty, side, labels, mode)
    # The display range is found here, not on napari's thread (a whole pass over the map).
    return result, regions, max(1e-3, float(result.uncertainty.max()))


class UncertaintyDock(QWidget):
    """Compute the model's uncertainty, rank regions, and go to the next one to annotate.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.worker: Any = None
        self._run: dict[str, Any] | None = None
        self.queue: Any = None
        self._shown: dict[str, Any] = {}
        self._refresh_pending = False
        self._build()
        self._connect()
        self._update_enabled()

    # -- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = LayerChoice(self.viewer, is_user_image, parent=self)
        form.addRow("Image", self.image_combo)
        self.method_combo = QComboBox()
        for key, text in METHOD_LABELS.items():
            self.method_combo.addItem(text, key)
        self.method_combo.setToolTip(
            "Entropy: where the probability is near 0.5 (fast). Flips and rotations: where the "
            "model changes its mind when the image is flipped or turned (4x the time). Monte-Carlo "
            "dropout: for models with dropout layers.")
        form.addRow("Uncertainty", self.method_combo)
        self.side_spin = QSpinBox()
        self.side_spin.setRange(16, 4096)
        self.side_spin.setSingleStep(16)
        self.side_spin.setValue(128)
        self.side_spin.setSuffix(" px")
        self.side_spin.setToolTip("Side of the square regions that are ranked (what you would "
                                  "annotate in one go).")
        form.addRow("Region side", self.side_spin)
        self.top_spin = QSpinBox()
        self.top_spin.setRange(1, 1000)
        self.top_spin.setValue(10)
        self.top_spin.setToolTip("How many of the most uncertain regions are outlined.")
        form.addRow("Show top", self.top_spin)
        self.labels_combo = LayerChoice(
            self.viewer, is_labels, specials=[("no annotations yet", NO_LABELS)], parent=self,
            prefer=lambda layer: role_of(layer) == SCRIBBLE_ROLE)
        self.labels_combo.setToolTip("Your annotations: regions with painted pixels are skipped "
                                     "(dense or correction labels: their whole slice).")
        form.addRow("Annotations", self.labels_combo)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("scribbles (painted pixels)", "scribbles")
        self.mode_combo.addItem("dense / correction (whole slice)", "dense")
        form.addRow("Annotated means", self.mode_combo)
        self.slice_check = QCheckBox("only the slice in view (stacks)")
        form.addRow(self.slice_check)
        self.refresh_check = QCheckBox("refresh after training (new model)")
        self.refresh_check.setChecked(True)
        self.refresh_check.setToolTip("When a training run ends (or another model is loaded), "
                                      "compute the uncertainty and the ranking again with it.")
        form.addRow(self.refresh_check)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.compute_button = QPushButton("Compute uncertainty")
        self.compute_button.clicked.connect(lambda: self.compute())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.compute_button, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.next_button = QPushButton("Next region →")
        self.next_button.setToolTip("Go to the most uncertain region not annotated yet and paint there.")
        self.next_button.clicked.connect(lambda: self.next_region())
        layout.addWidget(self.next_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status = QLabel("Compute the uncertainty, then press Next region to paint where the model "
                             "is least sure.")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _connect(self) -> None:
        pairs = [(self.session.busy_changed, self._on_busy_changed),
                 (self.session.model_changed, self._on_model_changed)]
        for signal, slot in pairs:
            signal.connect(slot)

        def _on_destroyed(*_: Any) -> None:
            for signal, slot in pairs:
                signal.disconnect(slot, missing_ok=True)

        self.destroyed.connect(_on_destroyed)

    # -- computing ------------------------------------------------------------------------
    def _labels_layer(self) -> Any:
        value = self.labels_combo.value()
        return None if value in (None, NO_LABELS) else value

    def compute(self) -> bool:
        """Start computing the uncertainty of the chosen image; False (notified) if refused."""
        from napari.utils.notifications import show_error

        from napari_segloop.core.inference.predict import PredictOptions

        image = self.image_combo.layer()
        if image is None:
            show_error("Open or choose an image first.")
            return False
        if self.session.busy:
            show_error(f"A {self.session.job.name} is running; the uncertainty can be computed after it.")
            return False
        bundle = self.session.bundle
        channels = bundle.in_channels if bundle is not None else 1
        options = PredictOptions(device=self.session.device or "auto")
        try:
            inp = layer_io.read_input(image, self.viewer, options, channels, self.slice_check.isChecked())
            if bundle is not None:
                inp.options.resolved(bundle)
                layer_io.check_input(inp, bundle.in_channels)
        except SegloopError as exc:
            show_error(f"{image.name}: {exc}")
            self.status.setText(str(exc))
            return False
        if is_large_array(inp.data):
            text = ("The uncertainty map is computed in memory, and this image is larger than memory: "
                    "open a crop of it (or, for a stack, check 'only the slice in view').")
            show_error(f"{image.name}: {text}")
            self.status.setText(text)
            return False
        labels = self._labels_layer()
        labels_data = None
        if labels is not None:
            shape = tuple(labels.data.shape)
            if shape != inp.layout.output_shape:
                show_error(f"The annotations {labels.name!r} have shape {shape}, but the image "
                           f"{image.name!r} has {inp.layout.output_shape}; choose its own labels.")
                return False
            labels_data = labels.data  # a reference: the worker reads it
        method = self.method_combo.currentData()
        side = self.side_spin.value()
        members: tuple[Any, ...] = ()
        if method == "ensemble":
            chosen = list(self.session.ensemble)
            if len(chosen) < 2:
                show_error("Check two or more models in the Predict dock's Ensemble section first.")
                return False
            bundle, members = chosen[0], tuple(chosen[1:])
        worker = create_job_worker(uncertainty_job, bundle, inp.data, inp.options, method, side, labels_data,
                                   self.mode_combo.currentData(), inp.slice_index, members,
                                   desc=f"segloop: uncertainty of {image.name}")
        self._run = {"image": weakref.ref(image), "name": image.name, "inp": inp, "side": side,
                     "labels": weakref.ref(labels) if labels is not None else None, "cancelled": False,
                     "method": method}
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress_bar.setRange(0, 0)
        self.status.setText(f"Computing the uncertainty of {image.name}…")
        if not self.session.start_job("uncertainty", worker):
            self._run, self.worker = None, None
            self.status.setText("Another job is running.")
            return False
        self._update_enabled()
        return True

    def cancel(self) -> None:
        """Stop the computation at its next batch of tiles; nothing is written."""
        if self._run is not None and self.worker is not None:
            self._run["cancelled"] = True
            self.worker.quit()
            self.status.setText("Cancelling…")

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            if event.total > 0:
                self.progress_bar.setRange(0, event.total)
                self.progress_bar.setValue(event.done)
            if self.worker is not None:
                show_progress(self.worker, event)
        elif isinstance(event, Notice):
            notify(event)
        elif isinstance(event, ModelReady):
            self.session.set_model(event.bundle)

    def _on_returned(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        from napari_segloop.core.active.regions import RegionQueue

        run = self._run
        if run is None or run["cancelled"]:
            return
        if isinstance(result, JobFailed):
            show_error(f"{run['name']}: {result.message}")
            self.status.setText(result.message)
            return
        image = run["image"]()
        if image is None or image not in self.viewer.layers:
            show_info(f"The image layer {run['name']!r} was removed; the uncertainty was dropped.")
            return
        umap, regions, top_value = result
        inp = run["inp"]
        lay = inp.layout
        data = umap.uncertainty
        if inp.slice_index is not None:
            full = np.zeros(lay.output_shape, np.float32)
            full[inp.slice_index] = data
            data = full
        layer = ensure_image(self.viewer, UNCERTAINTY_ROLE, image.name, data, image,
                             colormap="magma", contrast_limits=(0.0, top_value),
                             opacity=0.55)
        layer.metadata[METADATA_KEY]["description"] = umap.description
        layer.scale, layer.translate = lay.scale, lay.translate
        self._shown = {"image": weakref.ref(image), "inp": inp, "side": run["side"],
                       "labels": run["labels"], "method": run["method"]}
        self.queue = RegionQueue([self._with_slice(r, inp.slice_index) for r in regions])
        self._draw_regions(image)
        top = regions[0].score if regions else 0.0
        self.status.setText(f"{umap.description}: {len(regions)} regions not annotated yet, the most "
                            f"uncertain scores {top:.3f}. Press Next region.")

    @staticmethod
    def _with_slice(region: Any, index: tuple[int, ...] | None) -> Any:
        from dataclasses import replace

        return region if index is None else replace(region, index=tuple(index))

    def _on_finished(self) -> None:
        run = self._run
        self._run, self.worker = None, None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0 if run is None or run["cancelled"] else 1)
        if run is not None and run["cancelled"]:
            self.status.setText("Cancelled; nothing was written.")
        self._update_enabled()

    # -- regions on the canvas ---------------------------------------------------------------
    def _rectangles(self, regions: list[Any], lay: Any) -> list[np.ndarray]:
        out = []
        for reg in regions:
            y0, x0, y1, x1 = reg.bbox
            corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
            if reg.index:
                lead = np.broadcast_to(np.asarray(reg.index, float), (4, len(reg.index)))
                corners = np.hstack([lead, corners])
            out.append(corners)
        return out

    def _draw_regions(self, image: Any) -> Any:
        lay = self._shown["inp"].layout
        top = self.queue.regions[: self.top_spin.value()]
        layer = find_output(self.viewer, REGIONS_ROLE, image.name)
        if layer is not None:
            self.viewer.layers.remove(layer)
        if not top:
            return None
        rects = self._rectangles(top, lay)
        features = {"rank": np.arange(1, len(top) + 1), "score": [r.score for r in top]}
        ndim = len(lay.output_shape)
        layer = _add_keeping_selection(self.viewer, lambda: self.viewer.add_shapes(
            rects, shape_type="rectangle", name=f"{image.name} regions", ndim=ndim,
            edge_color=REGION_COLOUR, face_color="transparent", edge_width=2,
            features=features, text={"string": "{rank}", "color": REGION_COLOUR, "size": 12,
                                     "anchor": "upper_left"},
            scale=lay.scale, translate=lay.translate,
            metadata={METADATA_KEY: {"role": REGIONS_ROLE, "image": image.name}},
        ))
        return layer

    def _annotated(self, region: Any) -> bool:
        ref = self._shown.get("labels")
        labels = ref() if ref is not None else None
        if labels is None or labels not in self.viewer.layers:
            labels = self._scribbles_of(self._shown["image"]())
            if labels is None:
                return False
        y0, x0, y1, x1 = region.bbox
        if self.mode_combo.currentData() == "dense":
            plane = labels.data[region.index] if region.index else labels.data
            return bool(np.any(np.asarray(plane)))
        return bool(np.any(np.asarray(labels.data[(*region.index, slice(y0, y1), slice(x0, x1))])))

    def _scribbles_of(self, image: Any) -> Any:
        if image is None:
            return None
        return find_output(self.viewer, SCRIBBLE_ROLE, image.name)

    def next_region(self) -> Any:
        """Go to the next most uncertain region not annotated yet; returns it (None when done)."""
        from napari.utils.notifications import show_info

        if self.queue is None:
            show_info("Compute the uncertainty first.")
            return None
        image = self._shown["image"]()
        if image is None or image not in self.viewer.layers:
            show_info("The image of this ranking was removed; compute the uncertainty again.")
            return None
        region = self.queue.next(self._annotated)
        if region is None:
            text = "Every ranked region is annotated: train, then compute the uncertainty again."
            show_info(text)
            self.status.setText(text)
            return None
        self._go_to(region, self._shown["inp"].layout)
        self._highlight(image, region)
        self._paint_in(image)
        rank = self.queue.position + 1
        self.status.setText(f"Region {rank} of {len(self.queue)} (score {region.score:.3f}, "
                            f"{'slice ' + ','.join(map(str, region.index)) + ', ' if region.index else ''}"
                            f"rows {region.bbox[0]}-{region.bbox[2]}, columns {region.bbox[1]}-"
                            f"{region.bbox[3]}): paint it, then press Next region.")
        return region

    def _go_to(self, region: Any, lay: Any) -> None:
        scale = np.asarray(lay.scale, float)
        translate = np.asarray(lay.translate, float)
        n = len(lay.output_shape)
        world_axes = list(range(self.viewer.dims.ndim - n, self.viewer.dims.ndim))
        cy, cx = region.centre
        data_point = [*map(float, region.index), cy, cx]
        world = np.asarray(data_point) * scale + translate
        for axis, value in zip(world_axes[:-2], world[:-2], strict=True):
            self.viewer.dims.set_point(axis, value)
        if self.viewer.dims.ndisplay == 2:
            # reset_view fits the whole scene into the canvas (public API; no canvas size needed):
            # from that zoom, one region fills about 60% of the view.
            self.viewer.reset_view()
            camera = camera_of(self.viewer)
            y0, x0, y1, x1 = region.bbox
            extent = max((y1 - y0) * abs(scale[-2]), (x1 - x0) * abs(scale[-1]), 1e-6)
            world_extent = np.asarray(self.viewer.layers.extent.world, float)
            scene = float(np.max(world_extent[1, -2:] - world_extent[0, -2:]))
            camera.zoom = camera.zoom * 0.6 * max(scene, extent) / extent
            camera.center = tuple(world[-2:])

    def _highlight(self, image: Any, region: Any) -> None:
        layer = find_output(self.viewer, REGIONS_ROLE, image.name)
        if layer is None:
            return
        top = self.queue.regions[: len(layer.data)]
        colours = [CURRENT_COLOUR if r is region else REGION_COLOUR for r in top]
        layer.edge_color = colours

    def _paint_in(self, image: Any) -> None:
        ref = self._shown.get("labels")
        labels = ref() if ref is not None else None
        if labels is None or labels not in self.viewer.layers:
            labels = self._scribbles_of(image)
        if labels is None:
            bundle = self.session.bundle
            labels = add_scribble_layer(self.viewer, image, bundle.in_channels if bundle is not None else 1)
            self._shown["labels"] = weakref.ref(labels)
            self.labels_combo.set_layer(labels)
        self.viewer.layers.selection.active = labels
        labels.mode = "paint"
        if labels.selected_label == 0:
            labels.selected_label = 1

    # -- refresh after training ----------------------------------------------------------------
    def _on_model_changed(self, *_: Any) -> None:
        if not self.refresh_check.isChecked() or self.queue is None:
            return
        self._refresh_pending = True
        if not self.session.busy:
            self._refresh()

    def _on_busy_changed(self, busy: bool) -> None:
        self._update_enabled()
        if not busy and self._refresh_pending:
            self._refresh()

    def _refresh(self) -> None:
        self._refresh_pending = False
        image = self._shown.get("image", lambda: None)()
        if image is None or image not in self.viewer.layers:
            return
        self.image_combo.set_layer(image)
        self.compute()

    def _update_enabled(self, *_: Any) -> None:
        running = self.worker is not None
        self.compute_button.setEnabled(not running and not self.session.busy)
        self.cancel_button.setEnabled(running)
        self.next_button.setEnabled(self.queue is not None)
