"""The Predict dock: run the model on an image layer and show its probability map.

The dock reads the chosen layer on the main thread, runs
:func:`napari_segloop.core.inference.predict` in a napari worker with a
progress bar and a Cancel button, and writes the result to the
``<image> probability`` layer (see :mod:`napari_segloop.widgets.layer_io`).
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_segloop.cli.equivalent import predict_command
from napari_segloop.core import bundle as core_bundle
from napari_segloop.core.errors import SegloopError
from napari_segloop.core.events import BlockWritten, Notice, Progress
from napari_segloop.core.inference.ensemble import Ensemble, predict_ensemble
from napari_segloop.core.inference.normalize import CONVERSIONS as CORE_CONVERSIONS
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.inference.threads import apply_threads, available_cores, resolve_threads
from napari_segloop.widgets import large_layers, layer_io
from napari_segloop.widgets.class_state import ClassPrediction
from napari_segloop.widgets.jobs import (
    JobFailed,
    ModelReady,
    create_job_worker,
    notify,
    read_and_load,
    show_progress,
)
from napari_segloop.widgets.pickers import LayerChoice, is_user_image
from napari_segloop.widgets.session import session_for, unwrap
from napari_segloop.widgets.settings import MODEL_DEFAULT, UserSettings

#: Channel conversions offered to the user: (label, convert, channel), labelled as the
#: core's messages name them.
CONVERSIONS = tuple((label, key, None) for key, label in CORE_CONVERSIONS.items())


def predict_job(
    bundle: Any, data: Any, options: PredictOptions, threads: int | str = "auto",
    min_confidence: float | None = None,
) -> Generator[Any, None, Any]:
    """The worker's generator: read the layer data, load the default model if needed, predict.

    Runs in the worker thread: reading a lazy (dask, zarr) layer and the thread
    policy (``threads``) happen here, never on napari's GUI thread.
    """
    apply_threads(threads)
    bundle, data = yield from read_and_load(bundle, data)
    disagreement = None
    if isinstance(bundle, Ensemble):
        out = yield from predict_ensemble(bundle, data, options)
        prob, disagreement = out.probability, out.disagreement
        first = bundle.members[0]
    else:
        prob = yield from predict(bundle, data, options)
        first = bundle
    result: Any = prob
    if first.classes > 1:
        # K classes: the class map at the model's minimum confidence, made here, not on the UI thread.
        from napari_segloop.core.evaluation.multiclass import class_map

        minimum = float(first.settings.threshold if min_confidence is None else min_confidence)
        result = ClassPrediction(prob, class_map(prob, minimum), first.class_names, minimum)
    if disagreement is not None:
        # The display range is found here, not on napari's thread (a whole pass over the map).
        return EnsembleOutput(result, disagreement, len(bundle.members),
                              max(1e-3, float(disagreement.max())))
    return result


@dataclass
class EnsembleOutput:
    """What :func:`predict_job` returns for an ensemble: the mean and where the members disagree."""

    result: Any  # np.ndarray (binary) or ClassPrediction
    disagreement: np.ndarray
    members: int
    top: float


def default_model_available() -> bool:
    """True if the built-in default model is installed."""
    return (core_bundle.default_model_path() / core_bundle.WEIGHTS_FILE).is_file()


@dataclass
class _Run:
    """What the result handler needs to know about the run in flight."""

    image: weakref.ref
    image_name: str
    image_path: str | None
    inp: layer_io.PredictInput
    options: PredictOptions
    bundle: Any
    worker: Any
    cancelled: bool = False
    live: Any = None  # large_layers.LiveLayer of a layer larger than memory


class PredictDock(QWidget):
    """Predict a probability map for an image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it when the dock is opened).
    settings : UserSettings, optional
        Remembered settings (tests pass an isolated store).
    """

    def __init__(self, napari_viewer: Any, settings: UserSettings | None = None) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.settings = settings or UserSettings()
        self.run_state: _Run | None = None
        self._conversions: list[tuple[str, int | None]] = []
        self._build()
        self._load_settings()
        self._connect_session()
        self._on_layer_changed(self.image_combo.layer())

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = LayerChoice(self.viewer, is_user_image, parent=self)
        self.image_combo.value_changed.connect(self._on_layer_changed)
        form.addRow("Image", self.image_combo)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        form.addRow("Model", self.model_label)

        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["whole stack", "current slice"])
        self.mode_combo.setToolTip("For stacks: predict every slice, or only the one shown.")
        form.addRow("Stack", self.mode_combo)

        self.convert_combo = QComboBox()
        self.convert_combo.setToolTip(
            "How the image's channels are turned into the model's input channels. "
            "Needed only when they differ."
        )
        self.convert_combo.currentIndexChanged.connect(self._update_hint)
        form.addRow("Channels", self.convert_combo)

        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.0, 20.0)
        self.scale_spin.setSingleStep(0.05)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setSpecialValueText("model default")
        self.scale_spin.setToolTip(
            "Resize factor applied before the model (the result is resized back). Above 1 when "
            "the objects are smaller than those the model was trained on."
        )
        form.addRow("Scale", self.scale_spin)

        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *self.session.devices])
        self.device_combo.setToolTip("auto: CUDA, then Apple MPS, then the CPU.")
        form.addRow("Device", self.device_combo)
        layout.addLayout(form)

        self.tiling_section = QCollapsible("Tiling", self)
        tiling = QWidget()
        tiling_form = QFormLayout(tiling)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSpecialValueText("model default")
        self.tile_spin.setToolTip("Square tile edge in pixels, a multiple of 32.")
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(-0.05, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setDecimals(2)
        self.overlap_spin.setSpecialValueText("model default")
        self.overlap_spin.setToolTip("Fraction of a tile shared with its neighbour (smooth seams).")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setToolTip("Tiles per forward pass; lower it if memory is short.")
        tiling_form.addRow("Tile size", self.tile_spin)
        tiling_form.addRow("Overlap", self.overlap_spin)
        tiling_form.addRow("Batch size", self.batch_spin)
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, max(1, available_cores()))
        self.threads_spin.setSpecialValueText(f"auto ({resolve_threads('auto')})")
        self.threads_spin.setToolTip(
            "CPU threads torch may use. 'auto' leaves one core to napari and the rest of the "
            "machine (on a busy CPU more threads can be many times slower; see "
            "docs/performance.md). Same as `segloop predict --threads`."
        )
        tiling_form.addRow("CPU threads", self.threads_spin)
        self.tiling_section.addWidget(tiling)
        layout.addWidget(self.tiling_section)

        self.ensemble_section = QCollapsible("Ensemble", self)
        ensemble = QWidget()
        ensemble_layout = QVBoxLayout(ensemble)
        ensemble_layout.setContentsMargins(0, 0, 0, 0)
        hint = QLabel("Check two or more models of this session to average their probabilities; "
                      "where they disagree becomes '<image> uncertainty' (also the Uncertainty "
                      "dock's 'ensemble' method).")
        hint.setWordWrap(True)
        ensemble_layout.addWidget(hint)
        self.ensemble_list = QListWidget()
        self.ensemble_list.setMaximumHeight(110)
        self.ensemble_list.itemChanged.connect(self._ensemble_changed)
        ensemble_layout.addWidget(self.ensemble_list)
        self.ensemble_section.addWidget(ensemble)
        layout.addWidget(self.ensemble_section)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current batch of tiles; nothing is written.")
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

        layout.addWidget(QLabel("Equivalent command:"))
        command_row = QHBoxLayout()
        self.command_edit = QLineEdit()
        self.command_edit.setReadOnly(True)
        self.command_edit.setPlaceholderText("shown after a run")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the command to the clipboard.")
        self.copy_button.clicked.connect(self.copy_command)
        command_row.addWidget(self.command_edit, 1)
        command_row.addWidget(self.copy_button)
        layout.addLayout(command_row)
        layout.addStretch(1)

    def _load_settings(self) -> None:
        s = self.settings
        device = s.device or "auto"
        if self.device_combo.findText(device) < 0:
            # A device remembered from an earlier session that is not here now (a GPU removed, a
            # broken driver): kept visible and refused at Run, never silently replaced by the CPU.
            self.device_combo.addItem(device)
            self.device_combo.setItemData(self.device_combo.count() - 1, "not available",
                                          Qt.ItemDataRole.ToolTipRole)
            from napari.utils.notifications import show_warning

            show_warning(self.unavailable_device_message(device))
        self.device_combo.setCurrentText(device)
        self.session.set_device(device)
        self.tile_spin.setValue(0 if s.tile_size == MODEL_DEFAULT else s.tile_size)
        overlap = s.overlap
        self.overlap_spin.setValue(self.overlap_spin.minimum() if overlap == MODEL_DEFAULT else overlap)
        self.batch_spin.setValue(s.batch_size)
        self.threads_spin.setValue(min(s.threads, self.threads_spin.maximum()))
        self.device_combo.currentTextChanged.connect(self._device_chosen)
        self.tile_spin.valueChanged.connect(self._save_tiling)
        self.overlap_spin.valueChanged.connect(self._save_tiling)
        self.batch_spin.valueChanged.connect(self._save_tiling)
        self.threads_spin.valueChanged.connect(self._save_tiling)

    def unavailable_device_message(self, device: str) -> str:
        """The one line shown when ``device`` is chosen but does not work on this machine."""
        return (f"Device {device} is not available on this machine (working: "
                f"{', '.join(self.session.devices)}); choose auto or cpu in the Device box.")

    def _device_chosen(self, device: str) -> None:
        self.settings.device = device
        self.session.set_device(device)

    def _save_tiling(self, *_: Any) -> None:
        tile, overlap = self._tile_overlap()
        self.settings.tile_size = MODEL_DEFAULT if tile is None else tile
        self.settings.overlap = MODEL_DEFAULT if overlap is None else overlap
        self.settings.batch_size = self.batch_spin.value()
        self.settings.threads = self.threads_spin.value()

    def threads(self) -> int | str:
        """The CPU-thread setting: ``"auto"`` or a number."""
        value = self.threads_spin.value()
        return "auto" if value == 0 else value

    def _connect_session(self) -> None:
        pairs = [
            (self.session.model_changed, self._on_model_changed),
            (self.session.busy_changed, self._update_enabled),
            (self.session.versions_changed, self._fill_ensemble),
        ]
        for signal, slot in pairs:
            signal.connect(slot)
        self._fill_ensemble()

        dock = self

        def _on_destroyed(*_: Any) -> None:
            for signal, slot in pairs:
                signal.disconnect(slot, missing_ok=True)
            if dock.run_state is not None:  # the dock (or napari) was closed mid-run
                dock.run_state.cancelled = True
                dock.run_state.worker.quit()

        self.destroyed.connect(_on_destroyed)

    # -- state ---------------------------------------------------------------
    def _model_channels(self) -> int:
        bundle = self.session.bundle
        return bundle.in_channels if bundle is not None else 1

    def _on_model_changed(self, *_: Any) -> None:
        self._on_layer_changed(self.image_combo.layer())

    def _on_layer_changed(self, layer: Any) -> None:
        bundle = self.session.bundle
        members = self.ensemble_members() if hasattr(self, "ensemble_list") else []
        if len(members) >= 2:
            self.model_label.setText(f"ensemble of the {len(members)} models checked in Ensemble "
                                     f"({', '.join(m.architecture for m in members)})")
        elif bundle is not None:
            self.model_label.setText(f"{bundle.architecture} / {bundle.encoder} ({bundle.source})")
        elif default_model_available():
            self.model_label.setText("default (loaded on the first run)")
        else:
            self.model_label.setText("none: load one in the Model dock")
        previous = self.conversion()
        choices = [(convert, channel) for _, convert, channel in CONVERSIONS]
        labels = [label for label, _, _ in CONVERSIONS]
        is_stack = False
        if layer is not None:
            lay = layer_io.layout(layer, self._model_channels())
            is_stack = lay.is_stack
            if lay.n_channels > 1:
                choices += [("none", k) for k in range(lay.n_channels)]
                labels += [f"channel {k} only" for k in range(lay.n_channels)]
        self._conversions = choices
        self.convert_combo.blockSignals(True)
        self.convert_combo.clear()
        self.convert_combo.addItems(labels)
        self.convert_combo.setCurrentIndex(choices.index(previous) if previous in choices else 0)
        self.convert_combo.blockSignals(False)
        self.mode_combo.setEnabled(is_stack)
        self._update_hint()
        self._update_enabled()

    def _update_hint(self, *_: Any) -> None:
        layer = self.image_combo.layer()
        bundle = self.session.bundle
        if layer is None or bundle is None or self.session.busy:
            if layer is None:
                self.status.setText("Open or choose an image layer.")
            return
        members = self.ensemble_members()
        try:
            if len(members) >= 2:
                Ensemble(members)  # models of one task (same channels and classes)
            inp = layer_io.read_input(layer, self.viewer, self.options(), bundle.in_channels,
                                      slice_only=False, probe=True)
            layer_io.check_input(inp, bundle.in_channels)
            inp.options.resolved(bundle)
        except SegloopError as exc:
            self.status.setText(str(exc))
        else:
            self.status.setText(f"Ensemble of {len(members)} models." if len(members) >= 2 else "")

    def _update_enabled(self, *_: Any) -> None:
        busy = self.session.busy
        has_model = self.session.bundle is not None or default_model_available()
        has_image = self.image_combo.layer() is not None
        self.run_button.setEnabled(has_image and has_model and not busy)
        self.cancel_button.setEnabled(self.run_state is not None)
        if not has_model:
            self.run_button.setToolTip("Load a model in the Model dock first.")
        elif not has_image:
            self.run_button.setToolTip("Open or choose an image layer first.")
        elif busy:
            self.run_button.setToolTip("Another job is running.")
        else:
            self.run_button.setToolTip("Predict the probability map.")

    def _tile_overlap(self) -> tuple[int | None, float | None]:
        tile = self.tile_spin.value() or None
        overlap = self.overlap_spin.value()
        return tile, (None if overlap < 0 else round(overlap, 2))

    def conversion(self) -> tuple[str, int | None]:
        """The chosen channel conversion: ``(convert, channel)``."""
        index = self.convert_combo.currentIndex()
        choices = self._conversions
        return choices[index] if 0 <= index < len(choices) else ("none", None)

    def set_conversion(self, convert: str, channel: int | None = None) -> None:
        """Choose a channel conversion (ignored if not offered for this image)."""
        choices = self._conversions
        if (convert, channel) in choices:
            self.convert_combo.setCurrentIndex(choices.index((convert, channel)))

    def options(self) -> PredictOptions:
        """The :class:`PredictOptions` chosen in the dock."""
        tile, overlap = self._tile_overlap()
        convert, channel = self.conversion()
        scale = self.scale_spin.value()
        return PredictOptions(
            device=self.device_combo.currentText(),
            tile_size=tile,
            overlap=overlap,
            batch_size=self.batch_spin.value(),
            scale=scale if scale > 0 else None,
            convert=convert,
            channel=channel,
        )

    # -- run -----------------------------------------------------------------
    def run(self) -> bool:
        """Start a prediction of the chosen image layer.

        Returns
        -------
        bool
            True if a worker was started; False if the input was refused (a
            notification says why) or another job runs.
        """
        from napari.utils.notifications import show_error

        layer = self.image_combo.layer()
        if layer is None or self.run_state is not None or self.session.busy:
            return False
        bundle = self.session.bundle
        members = self.ensemble_members()
        if len(members) >= 2:
            try:
                bundle = Ensemble(members)
            except SegloopError as exc:
                show_error(str(exc))
                self.status.setText(str(exc))
                return False
        options = self.options()
        if options.device not in ("auto", *self.session.devices):
            text = self.unavailable_device_message(options.device)
            show_error(text)
            self.status.setText(text)
            return False
        slice_only = self.mode_combo.currentText() == "current slice"
        try:
            inp = layer_io.read_input(layer, self.viewer, options, self._model_channels(), slice_only)
            if bundle is not None:
                for member in getattr(bundle, "members", [bundle]):
                    options.resolved(member)
                layer_io.check_input(inp, bundle.in_channels)
        except SegloopError as exc:
            show_error(f"{layer.name}: {exc}")
            self.status.setText(str(exc))
            return False
        large = not slice_only and large_layers.is_large(layer)
        if large and bundle is not None and bundle.classes > 1:
            text = large_layers.CLASSES_REFUSED
            show_error(text)
            self.status.setText(text)
            return False
        if large:
            from napari_segloop.core.inference.blocks import Layout as BlockLayout

            block_layout = BlockLayout.of(inp.data.shape, self._model_channels(), inp.options.channel_axis,
                                          inp.options.rgb)
            worker = create_job_worker(large_layers.large_job, bundle, inp.data, inp.options, block_layout,
                                       layer.name, large_layers.visible_region(layer), self.threads(),
                                       desc=f"segloop: predicting {layer.name} block by block")
        else:
            worker = create_job_worker(predict_job, bundle, inp.data, inp.options, self.threads(),
                                       self.session.class_confidence,
                                       desc=f"segloop: predicting {layer.name}")
        source = getattr(layer, "source", None)
        path = getattr(source, "path", None)
        state = _Run(weakref.ref(layer), layer.name, str(path) if path else None, inp, options,
                     bundle, worker)
        # Bound methods of this QObject (not lambdas): Qt drops the connections if the dock is closed.
        # One run at a time, so ``self.run_state`` is the run that emitted.
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.run_state = state
        self.progress_bar.setRange(0, 0)
        where = f" (slice {inp.slice_index})" if inp.slice_index is not None else ""
        self.status.setText(f"Predicting {layer.name}{where}…")
        if not self.session.start_job("prediction", worker):
            self.run_state = None
            self.status.setText("Another job is running.")
            return False
        self._update_enabled()
        return True

    @property
    def worker(self) -> Any:
        """The running prediction worker, or None."""
        return None if self.run_state is None else self.run_state.worker

    def cancel(self) -> None:
        """Stop the running prediction at its next batch; nothing is written."""
        if self.run_state is not None:
            self.run_state.cancelled = True
            self.run_state.worker.quit()
            self.status.setText("Cancelling…")

    def _on_event(self, event: Any) -> None:
        state = self.run_state
        if state is None:
            return
        if isinstance(event, Progress):
            if event.total > 0:
                self.progress_bar.setRange(0, event.total)
                self.progress_bar.setValue(event.done)
            show_progress(state.worker, event)
        elif isinstance(event, Notice):
            notify(event)
        elif isinstance(event, ModelReady):
            state.bundle = event.bundle
            self.session.set_model(event.bundle)
        elif isinstance(event, large_layers.LiveOutput):
            image = state.image()
            if image is not None and any(lyr is image for lyr in self.viewer.layers):
                layer = layer_io.write_live_probability(self.viewer, self.session, image, event.output,
                                                        state.inp)
                state.live = large_layers.LiveLayer(layer, event.output)
                self.status.setText(f"Predicting {state.image_name} block by block into {layer.name} "
                                    f"({event.output.path})…")
        elif isinstance(event, BlockWritten) and state.live is not None:
            state.live.refresh()

    def _on_returned(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        state = self.run_state
        if state is None or state.cancelled:
            return
        if isinstance(result, JobFailed):
            show_error(f"{state.image_name}: {result.message}")
            self.status.setText(result.message)
            return
        image = state.image()
        if image is None or not any(lyr is image for lyr in self.viewer.layers):
            text = f"The image layer {state.image_name!r} was removed while predicting; result dropped."
            show_info(text)
            self.status.setText(text)
            return
        if isinstance(result, large_layers.LargeResult):
            self._large_done(state, result)
            return
        ensemble = result if isinstance(result, EnsembleOutput) else None
        if ensemble is not None:
            result = ensemble.result
        if isinstance(result, ClassPrediction):
            out = layer_io.write_class_prediction(self.viewer, self.session, image, result, state.inp)
        else:
            out = layer_io.write_probability(self.viewer, self.session, image, result, state.inp)
        if ensemble is not None:
            self._write_disagreement(image, ensemble, state.inp)
        self.status.setText(f"Done: {out.name}.")
        try:
            self.command_edit.setText(predict_command(state.bundle, state.options, state.image_path,
                                                         threads=self.threads()))
            self.command_edit.setCursorPosition(0)
            self.command_edit.setToolTip(self.command_edit.text())
        except SegloopError:
            self.command_edit.clear()

    def _large_done(self, state: _Run, result: Any) -> None:
        image = state.image()
        live = state.live
        if live is None or image is None:
            return
        live.refresh()
        entry = self.session.probability(image)
        if entry is not None:  # the docks that scored the half-filled map score it again
            self.session.set_probability(image, replace(entry, complete=True))
        layer = live.layer()
        name = layer.name if layer is not None else "the probability layer"
        self.status.setText(f"Done: {name}, {result.blocks.blocks} block(s), in {result.output.path}.")
        try:
            self.command_edit.setText(predict_command(state.bundle, state.options, state.image_path,
                                                         threads=self.threads()))
            self.command_edit.setCursorPosition(0)
        except SegloopError:
            self.command_edit.clear()

    def _write_disagreement(self, image: Any, ensemble: EnsembleOutput, inp: Any) -> None:
        from napari_segloop.widgets.outputs import ensure_image, find_output
        from napari_segloop.widgets.session import METADATA_KEY

        data = ensemble.disagreement
        lay = inp.layout
        if inp.slice_index is not None:
            # Written into the map of the earlier slices when there is one (as the probability).
            shown = find_output(self.viewer, "uncertainty", image.name)
            current = None if shown is None else shown.data
            reuse = isinstance(current, np.ndarray) and current.shape == lay.output_shape \
                and current.dtype == np.float32
            full = current if reuse else np.zeros(lay.output_shape, np.float32)
            full[inp.slice_index] = data
            data = full
        layer = ensure_image(self.viewer, "uncertainty", image.name, data, image, colormap="magma",
                             contrast_limits=(0.0, ensemble.top), opacity=0.55, visible=False)
        layer.metadata[METADATA_KEY]["description"] = (
            f"disagreement of an ensemble of {ensemble.members} models (twice their standard deviation)")
        layer.scale, layer.translate = lay.scale, lay.translate

    # -- ensembles -------------------------------------------------------------
    def _fill_ensemble(self, *_: Any) -> None:
        checked = {id(b) for b in self.ensemble_members()}
        self.ensemble_list.blockSignals(True)
        self.ensemble_list.clear()
        for version in self.session.versions:
            item = QListWidgetItem(version.label)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if id(version.bundle) in checked
                               else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, version.bundle)
            self.ensemble_list.addItem(item)
        self.ensemble_list.blockSignals(False)
        self._ensemble_changed()

    def ensemble_members(self) -> list[Any]:
        """The models checked in the Ensemble section (in the session's order)."""
        out = []
        for i in range(self.ensemble_list.count()):
            item = self.ensemble_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def set_ensemble(self, labels: list[str]) -> None:
        """Check exactly the session models with these labels (the Ensemble section's list)."""
        for i in range(self.ensemble_list.count()):
            item = self.ensemble_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in labels else Qt.CheckState.Unchecked)

    def _ensemble_changed(self, *_: Any) -> None:
        members = self.ensemble_members()
        self.session.ensemble = members if len(members) >= 2 else []
        self._on_layer_changed(self.image_combo.layer())

    def _on_errored(self, exc: Exception) -> None:
        self.status.setText(f"Prediction failed with an unexpected error (see the notification): {exc}")

    def _on_finished(self) -> None:
        state = self.run_state
        self.run_state = None
        if state is None:
            return
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0 if state.cancelled else 1)
        if state.cancelled:
            self.status.setText("Cancelled; the blocks done so far stay in the probability layer."
                                if state.live is not None else "Cancelled; nothing was written.")
        self._update_enabled()

    def copy_command(self) -> None:
        """Copy the equivalent ``segloop`` command to the clipboard."""
        text = self.command_edit.text()
        if text:
            QApplication.clipboard().setText(text)
