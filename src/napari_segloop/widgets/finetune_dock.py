"""The Fine-tune dock: paint, press Train, keep working, watch the model improve.

A view over :func:`napari_segloop.core.training.runs.train_to_folder` run in a
napari thread worker (see ``docs/architecture.md`` for why a thread and not a
subprocess). The dock reads layer *references* only: the worker copies the
labels it trains on (at the start and at each refresh after the user paints),
so napari never waits for a copy and the user's layers are never written.

* **Labels**: a Labels layer per image, read in one of three modes (scribbles,
  dense, correction). "New scribble layer" makes an empty one of the image's
  shape (1 = foreground, 2 = background); "Correct the mask" copies the
  plugin's ``<image> mask`` for editing (pixels you change weigh more).
* **Live**: the curves follow each step; every few seconds the visible plane of
  the image is predicted with the latest weights into ``<image> probability``
  (the Threshold and Confusion docks follow it); painting more is picked up at
  the next refresh.
* **Nothing is lost**: a checkpoint with the labels is written when the run
  starts and whenever the weights improve; the new model is saved as a new
  version folder (``<models folder>/<model>-vNNN``) and joins the Model
  dock's list, next to the model it came from.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_segloop.core.errors import SegloopError
from napari_segloop.core.events import Notice, Preview, Progress, TrainStep, Validation
from napari_segloop.widgets.jobs import JobFailed, create_job_worker, notify, show_progress
from napari_segloop.widgets.layer_io import layer_array, layout, read_input, write_probability
from napari_segloop.widgets.new_model_form import NewModelChoice, NewModelForm
from napari_segloop.widgets.outputs import MASK_ROLE, find_output
from napari_segloop.widgets.pickers import LayerChoice, is_labels, is_user_image
from napari_segloop.widgets.session import METADATA_KEY, session_for, unwrap, version_label
from napari_segloop.widgets.settings import UserSettings
from napari_segloop.widgets.training_plot import TrainingPlot
from napari_segloop.widgets.training_state import TrainingRunState

#: Colours of the scribble classes (Okabe-Ito yellow and blue): visible on gray and colour images.
SCRIBBLE_COLORS = {0: "transparent", 1: "#F0E442", 2: "#0072B2", None: "#CC79A7"}
SCRIBBLE_ROLE, CORRECTION_ROLE = "scribbles", "corrections"
MODE_LABELS = {"scribbles": "scribbles (1 = object, 2 = background)",
               "dense": "dense (0 = background, other = object)",
               "correction": "correction (an edited copy of the mask)"}


def mode_labels(classes: int) -> dict[str, str]:
    """The Mode combo's labels for labels of ``classes`` classes (2: binary)."""
    if classes <= 2:
        return dict(MODE_LABELS)
    return {"scribbles": f"scribbles (1-{classes - 1} = classes, {classes} = background)",
            "dense": f"dense (0 = background, 1-{classes - 1} = classes)",
            "correction": "correction (an edited copy of the class map)"}


TRANSFER_LABELS = {"full": "fine-tune everything", "frozen": "freeze the encoder (decoder only)",
                   "frozen_then_unfrozen": "encoder frozen first, then everything"}
LOSS_LABELS = {"bce+dice": "BCE + Dice", "bce": "BCE", "wbce": "weighted BCE (rare objects)",
               "dice": "Dice"}


def finetune_job(start: Any, new_model: NewModelChoice | None, pairs: list[Any], config: Any,
                 folder: str, control: Any) -> Any:
    """The worker's generator: create the new model if asked, then train and save."""
    from napari_segloop.core.training.runs import train_to_folder

    if new_model is not None:
        yield Progress(0, 1, "creating the new model")
        start = new_model.build(start.in_channels if start else 1)
    return (yield from train_to_folder(start, pairs, config, folder, control))


def scribble_colormap() -> Any:
    """napari colormap of a scribble layer: 1 yellow (object), 2 blue (background)."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=SCRIBBLE_COLORS)


def class_scribble_colormap(classes: int) -> Any:
    """Scribble colours for K classes: 1 .. K-1 the class-map colours, K (background) blue."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_segloop.widgets.class_state import class_colors

    colors: dict[Any, Any] = dict(class_colors(classes))
    colors[classes] = SCRIBBLE_COLORS[2]
    colors[None] = SCRIBBLE_COLORS[None]
    return DirectLabelColormap(color_dict=colors)


def scribble_help(class_names: list[str]) -> str:
    """What to paint with which label, for a model with these classes (one name: binary)."""
    if len(class_names) <= 2:
        return ("Paint objects with label 1 (yellow) and background with label 2 (blue), a few "
                "strokes each, then press Train.")
    k = len(class_names)
    classes = ", ".join(f"{c} = {name}" for c, name in enumerate(class_names) if c)
    return (f"{k} classes: paint with label {classes}, and {k} = background (blue); 0 is "
            "not annotated. A few strokes of each, then press Train.")


def add_scribble_layer(viewer: Any, image: Any, model_channels: int,
                       class_names: list[str] | None = None) -> Any:
    """Add an empty scribble layer of ``image``'s shape, in paint mode with label 1 (object).

    With ``class_names`` of K >= 3 classes, labels 1 .. K-1 paint the classes and K background.
    """
    lay = layout(image, model_channels)
    names = list(class_names or [])
    if len(names) >= 3:
        cmap = class_scribble_colormap(len(names))
        features = {"class": ["not annotated", *names[1:], "background"]}
    else:
        cmap = scribble_colormap()
        features = {"class": ["not annotated", "object", "background"]}
    layer = viewer.add_labels(
        np.zeros(lay.output_shape, np.uint8), name=f"{image.name} scribbles",
        scale=lay.scale, translate=lay.translate, opacity=0.8,
        colormap=cmap,
        features=features,
        metadata={METADATA_KEY: {"role": SCRIBBLE_ROLE, "image": image.name}},
    )
    layer.mode = "paint"
    layer.selected_label = 1
    layer.brush_size = 6
    return layer


def _refuse_lazy(mask: Any) -> bool:
    """Tell the user, and return True, when ``mask`` is the lazy mask of a map larger than memory.

    A correction layer is an in-memory copy of the mask (napari paints into it, and the
    trainer compares it with the original); reading a lazy pyramid whole would stall napari
    or exhaust its memory.
    """
    from napari.utils.notifications import show_error

    from napari_segloop.widgets.large_layers import is_large

    if not (getattr(mask, "multiscale", False) or is_large(mask)):
        return False
    show_error(f"'{mask.name}' is the mask of a map larger than memory, and corrections are "
               "painted on a copy of it in memory. Paint scribbles instead (New scribble layer), "
               "or predict and correct a crop of the image.")
    return True


class FinetuneDock(QWidget):
    """Fine-tune the session's model on painted labels, in the background.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    settings : UserSettings, optional
        Remembered settings (tests pass an isolated store).
    """

    def __init__(self, napari_viewer: Any, settings: UserSettings | None = None) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.settings = settings or UserSettings()
        self.state = TrainingRunState()
        self.pairs: list[tuple[weakref.ref, weakref.ref]] = []
        self.worker: Any = None
        self.control: Any = None
        self._run: dict[str, Any] | None = None
        self._references: weakref.WeakKeyDictionary[Any, np.ndarray] = weakref.WeakKeyDictionary()
        self._build()
        self._connect()
        self.state.changed.connect(self._show_state)
        self._show_state()
        self._update_enabled()

    # -- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        layout_ = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = LayerChoice(self.viewer, is_user_image, parent=self)
        form.addRow("Image", self.image_combo)
        labels_row = QHBoxLayout()
        self.labels_combo = LayerChoice(self.viewer, is_labels, parent=self,
                                        prefer=lambda layer: _role(layer) in (SCRIBBLE_ROLE, CORRECTION_ROLE))
        self.labels_combo.value_changed.connect(self._labels_chosen)
        labels_row.addWidget(self.labels_combo, 1)
        form.addRow("Labels", labels_row)
        new_row = QHBoxLayout()
        self.new_scribbles_button = QPushButton("New scribble layer")
        self.new_scribbles_button.setToolTip(
            "An empty Labels layer of the image's shape, ready to paint: 1 (yellow) = object, "
            "2 (blue) = background; unpainted pixels are ignored.")
        self.new_scribbles_button.clicked.connect(lambda: self.new_scribble_layer())
        self.correct_button = QPushButton("Correct the mask")
        self.correct_button.setToolTip(
            "Copy '<image> mask' into a new Labels layer to edit: paint missed objects with 1, "
            "erase false ones with 0. The whole copy is the target; changed pixels weigh more.")
        self.correct_button.clicked.connect(lambda: self.correction_layer())
        new_row.addWidget(self.new_scribbles_button)
        new_row.addWidget(self.correct_button)
        form.addRow(new_row)
        self.mode_combo = QComboBox()
        for key, text in MODE_LABELS.items():
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip("How the labels are read (see the user guide).")
        form.addRow("Mode", self.mode_combo)
        layout_.addLayout(form)

        pairs_row = QHBoxLayout()
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(70)
        self.pairs_list.setToolTip("Train on several images: add each image with its labels. "
                                   "Empty: the image and labels chosen above.")
        buttons = QVBoxLayout()
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.clicked.connect(lambda: self.add_pair())
        self.clear_pairs_button = QPushButton("Clear")
        self.clear_pairs_button.clicked.connect(self.clear_pairs)
        buttons.addWidget(self.add_pair_button)
        buttons.addWidget(self.clear_pairs_button)
        pairs_row.addWidget(self.pairs_list, 1)
        pairs_row.addLayout(buttons)
        layout_.addLayout(pairs_row)

        options = QFormLayout()
        self.start_combo = QComboBox()
        self.start_combo.addItem("the loaded model (fine-tune)", "loaded")
        self.start_combo.addItem("a new model (below)", "new")
        options.addRow("Start from", self.start_combo)
        self.transfer_combo = QComboBox()
        for key, text in TRANSFER_LABELS.items():
            self.transfer_combo.addItem(text, key)
        self.transfer_combo.setToolTip(
            "Freeze the encoder when you have few labels or a pre-trained encoder (fast, little "
            "data); fine-tune everything when the images differ a lot from the model's.")
        options.addRow("Transfer", self.transfer_combo)
        self.loss_combo = QComboBox()
        for key, text in LOSS_LABELS.items():
            self.loss_combo.addItem(text, key)
        self.loss_combo.setToolTip("BCE + Dice suits most images; weighted BCE or Dice when the "
                                   "objects cover a small part of the image.")
        options.addRow("Loss", self.loss_combo)
        budget = QHBoxLayout()
        self.seconds_spin = QSpinBox()
        self.seconds_spin.setRange(5, 24 * 3600)
        self.seconds_spin.setValue(60)
        self.seconds_spin.setSuffix(" s")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1_000_000)
        self.steps_spin.setSpecialValueText("no step limit")
        budget.addWidget(self.seconds_spin)
        budget.addWidget(self.steps_spin)
        options.addRow("Budget", budget)
        self.keep_check = QCheckBox("keep the model's prediction where nothing is painted")
        self.keep_check.setChecked(True)
        self.keep_check.setToolTip("Scribbles say nothing about boundaries: this keeps what the "
                                   "starting model knew on unpainted pixels (recommended).")
        options.addRow(self.keep_check)
        self.preview_check = QCheckBox("live preview of the image in view")
        self.preview_check.setChecked(True)
        self.preview_check.toggled.connect(self._update_preview)
        options.addRow(self.preview_check)
        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit(self.settings.models_folder)
        self.folder_edit.setToolTip("New models are saved here as <model>-v001, -v002, … "
                                    "(never over an existing folder), with the labels they used.")
        self.folder_button = QPushButton("…")
        self.folder_button.clicked.connect(self._browse_folder)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.folder_button)
        options.addRow("Save to", folder_row)
        layout_.addLayout(options)

        self.new_section = QCollapsible("New model", self)
        new = QWidget()
        new_form = QFormLayout(new)
        self.new_form = NewModelForm("Unet", "tu-lcnet_075")
        new_form.addRow(self.new_form)
        self.new_section.addWidget(new)
        layout_.addWidget(self.new_section)

        run_row = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.train())
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Finish after this step and save the best model so far.")
        self.stop_button.clicked.connect(self.stop)
        run_row.addWidget(self.train_button, 1)
        run_row.addWidget(self.pause_button)
        run_row.addWidget(self.stop_button)
        layout_.addLayout(run_row)
        self.continue_button = QPushButton("Continue training: reload this model's labels")
        self.continue_button.setToolTip("Open the images and labels a trained model was made with, "
                                        "to paint more and train again.")
        self.continue_button.clicked.connect(lambda: self.continue_training())
        layout_.addWidget(self.continue_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        layout_.addWidget(self.progress_bar)
        self.plot = TrainingPlot(self)
        layout_.addWidget(self.plot)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout_.addWidget(self.status)
        layout_.addStretch(1)

    def _connect(self) -> None:
        pairs = [(self.session.busy_changed, self._update_enabled),
                 (self.session.model_changed, self._update_enabled),
                 (self.session.model_changed, self._update_mode_labels)]
        for signal, slot in pairs:
            signal.connect(slot)
        self.start_combo.currentIndexChanged.connect(self._update_mode_labels)
        self.new_form.classes_spin.valueChanged.connect(self._update_mode_labels)
        self._update_mode_labels()
        self.viewer.dims.events.current_step.connect(self._update_preview)
        self.image_combo.value_changed.connect(self._update_preview)
        dims_events = self.viewer.dims.events.current_step
        dock_ref = weakref.ref(self)
        preview_slot = self._update_preview

        def _on_destroyed(*_: Any) -> None:
            for signal, slot in pairs:
                signal.disconnect(slot, missing_ok=True)
            dims_events.disconnect(preview_slot)
            dock = dock_ref()
            control = getattr(dock, "control", None) if dock is not None else None
            if control is not None:
                control.stop()  # the worker saves the best model and ends

        self.destroyed.connect(_on_destroyed)

    # -- labels layers ------------------------------------------------------------------
    def new_scribble_layer(self, image: Any = None) -> Any:
        """Add an empty scribble layer for ``image`` (default: the chosen image) and select it."""
        from napari.utils.notifications import show_error

        image = unwrap(image) if image is not None else self.image_combo.layer()
        if image is None:
            show_error("Open or choose an image first.")
            return None
        names = self._class_names()
        layer = add_scribble_layer(self.viewer, image, self._model_channels(), names)
        self.labels_combo.set_layer(layer)
        self._set_mode("scribbles")
        self.status.setText(scribble_help(names))
        return layer

    def _class_names(self) -> list[str]:
        """The classes the next run trains: the new model's, or the current model's."""
        if self.start_combo.currentData() == "new":
            choice = self.new_form.choice()
            if choice.classes >= 3:
                return list(choice.class_names or ["background",
                                                   *(f"class {c}" for c in range(1, choice.classes))])
            return ["background", "object"]
        bundle = self.session.bundle
        if bundle is not None and bundle.classes > 1:
            return bundle.class_names
        return ["background", "object"]

    def correction_layer(self, image: Any = None) -> Any:
        """Copy the plugin's ``<image> mask`` into a new Labels layer to correct."""
        from napari.utils.notifications import show_error

        image = unwrap(image) if image is not None else self.image_combo.layer()
        if image is None:
            show_error("Open or choose an image first.")
            return None
        names = self._class_names()
        if len(names) >= 3:
            # K classes: correct the class map (its values are the classes; K = unassigned, not used).
            from napari_segloop.widgets.layer_io import CLASSES_ROLE, class_map_colormap

            mask = find_output(self.viewer, CLASSES_ROLE, image.name)
            if mask is None:
                show_error(f"There is no '{image.name} classes' yet: predict with the model of "
                           f"{len(names)} classes first, or paint scribbles.")
                return None
            if _refuse_lazy(mask):
                return None
            reference = np.array(mask.data, copy=True)
            extra = {"colormap": class_map_colormap(len(names))}
            legend = ", ".join(f"{c} = {n}" for c, n in enumerate(names))
            help_text = (f"Paint the right class over wrong pixels ({legend}); pixels left at "
                         f"{len(names)} (unassigned, grey) are not used. Then Train.")
        else:
            mask = find_output(self.viewer, MASK_ROLE, image.name)
            if mask is None:
                show_error(f"There is no '{image.name} mask' yet: predict and threshold first, or "
                           "paint scribbles.")
                return None
            if _refuse_lazy(mask):
                return None
            reference = (np.asarray(mask.data) != 0).astype(np.uint8)
            extra = {}
            help_text = "Paint missed objects with 1, erase false ones (label 0), then Train."
        layer = self.viewer.add_labels(
            reference.copy(), name=f"{image.name} corrections", scale=mask.scale,
            translate=mask.translate, opacity=0.6,
            metadata={METADATA_KEY: {"role": CORRECTION_ROLE, "image": image.name}}, **extra,
        )
        layer.mode = "paint"
        layer.selected_label = 1
        self._references[layer] = reference
        mask.visible = False
        self.labels_combo.set_layer(layer)
        self._set_mode("correction")
        self.status.setText(help_text)
        return layer

    def _update_mode_labels(self, *_: Any) -> None:
        """Name the label values of each mode for the classes the next run trains."""
        for key, text in mode_labels(len(self._class_names())).items():
            index = self.mode_combo.findData(key)
            if index >= 0 and self.mode_combo.itemText(index) != text:
                self.mode_combo.setItemText(index, text)

    def _labels_chosen(self, layer: Any) -> None:
        role = _role(layer)
        if role == SCRIBBLE_ROLE:
            self._set_mode("scribbles")
        elif role == CORRECTION_ROLE:
            self._set_mode("correction")

    def _set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))

    def add_pair(self, image: Any = None, labels: Any = None) -> bool:
        """Add an image with its labels to the training set."""
        image = unwrap(image) if image is not None else self.image_combo.layer()
        labels = unwrap(labels) if labels is not None else self.labels_combo.layer()
        if image is None or labels is None:
            return False
        if any(i() is image and lab() is labels for i, lab in self.pairs):
            return False
        self.pairs.append((weakref.ref(image), weakref.ref(labels)))
        self.pairs_list.addItem(f"{image.name}  ←  {labels.name}")
        return True

    def clear_pairs(self) -> None:
        """Forget the added pairs (train on the chosen image and labels)."""
        self.pairs.clear()
        self.pairs_list.clear()

    def _chosen_pairs(self) -> list[tuple[Any, Any]]:
        pairs = [(i(), lab()) for i, lab in self.pairs]
        pairs = [(i, lab) for i, lab in pairs if i is not None and lab is not None
                 and i in self.viewer.layers and lab in self.viewer.layers]
        if pairs:
            return pairs
        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        return [(image, labels)] if image is not None and labels is not None else []

    # -- options ------------------------------------------------------------------------
    def _model_channels(self) -> int:
        bundle = self.session.bundle
        return bundle.in_channels if bundle is not None else 1

    def config(self) -> Any:
        """The :class:`~napari_segloop.core.training.TrainConfig` of the dock's choices."""
        from napari_segloop.core.training import TrainConfig

        steps = self.steps_spin.value()
        return TrainConfig(
            mode=self.mode_combo.currentData(), loss=self.loss_combo.currentData(),
            transfer=self.transfer_combo.currentData(), max_seconds=float(self.seconds_spin.value()),
            max_steps=steps or None, keep_weight=1.0 if self.keep_check.isChecked() else 0.0,
            device=self.session.device or "auto",
        )

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for new models", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # -- running ------------------------------------------------------------------------
    def train(self) -> bool:
        """Start training; False (with a notification) when the input is refused or a job runs."""
        from napari.utils.notifications import show_error

        from napari_segloop.core.training import TrainControl, TrainingPair
        from napari_segloop.core.training.runs import next_version_path

        if self.session.busy:
            show_error(f"A {self.session.job.name} is running; stop it before training.")
            return False
        chosen = self._chosen_pairs()
        if not chosen:
            show_error("Choose an image and a labels layer (or make a scribble layer) first.")
            return False
        new = self.start_combo.currentData() == "new"
        start = self.session.bundle
        if start is None and not new:
            from napari_segloop.core.bundle import load_model

            start = load_model("default")
            self.session.set_model(start)
        pairs = []
        label_layers = []
        for image, labels in chosen:
            lay = layout(image, start.in_channels if start is not None else 1)
            shape = tuple(labels.data.shape)
            if shape != lay.output_shape:
                show_error(f"The labels {labels.name!r} have shape {shape}, but the image "
                           f"{image.name!r} needs {lay.output_shape}: make a new scribble layer "
                           "for this image.")
                return False
            pairs.append(TrainingPair(layer_array(image), labels.data, image.name,
                                      rgb=bool(getattr(image, "rgb", False)),
                                      reference=self._references.get(labels)))
            label_layers.append(labels)
        config = self.config()
        try:
            config = config.checked()
        except SegloopError as exc:
            show_error(str(exc))
            return False
        folder = Path(self.folder_edit.text().strip() or self.settings.models_folder).expanduser()
        if new and (problem := self.new_form.names_problem()) is not None:
            show_error(problem)
            return False
        choice = self.new_form.choice()
        base = choice.label if new else version_label(start)
        target = next_version_path(folder, base)
        self.settings.models_folder = str(folder)
        layer_refs = [weakref.ref(lab) for lab in label_layers]

        def read_labels() -> list[np.ndarray]:
            # Called in the worker thread; it copies what it gets.
            out = []
            for ref, pair in zip(layer_refs, pairs, strict=True):
                layer = ref()
                out.append(layer.data if layer is not None else pair.labels)
            return out

        control = TrainControl(read_labels=read_labels)
        new_model = choice if new else None
        worker = create_job_worker(finetune_job, start, new_model, pairs, config, str(target), control,
                                   desc="segloop: training")
        names = self._class_names()
        self._run = {"target": target, "layers": label_layers, "image": weakref.ref(chosen[0][0]),
                     "inputs": {}, "cancel": False, "class_names": names if len(names) >= 3 else None}
        for layer in label_layers:
            layer.events.paint.connect(self._painted)
            layer.events.data.connect(self._painted)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker, self.control = worker, control
        self.plot.clear()
        self.state.start(config.max_steps, config.max_seconds)
        self._update_preview()
        if not self.session.start_job("training", worker):
            self._cleanup()
            show_error("Another job is running.")
            return False
        self._update_enabled()
        return True

    def toggle_pause(self) -> None:
        """Pause a running job, or resume a paused one."""
        if self.control is None:
            return
        if self.control.paused:
            self.control.resume()
            self.state.set_phase("training")
        else:
            self.control.pause()
            self.state.set_phase("paused")
        self._update_enabled()

    def stop(self) -> None:
        """Finish after the current step; the best model so far is saved."""
        if self.control is not None:
            self.control.stop()
            self.state.set_phase("stopping")
            self._update_enabled()

    def _painted(self, *_: Any) -> None:
        if self.control is not None:
            self.control.labels_changed()

    def _update_preview(self, *_: Any) -> None:
        from napari_segloop.core.training import PreviewRequest

        control = self.control
        if control is None:
            return
        image = self.image_combo.layer()
        if image is None or not self.preview_check.isChecked() or self._run is None:
            control.request_preview(None)
            return
        from napari_segloop.core.inference.predict import PredictOptions

        # The plane in view, as the Predict dock's "current slice" reads it (a view, not a copy).
        inp = read_input(image, self.viewer, PredictOptions(), self._model_channels(), slice_only=True)
        key = (id(image), inp.slice_index)
        self._run["inputs"][key] = (weakref.ref(image), inp)
        control.request_preview(PreviewRequest(key, inp.data, None, inp.options.rgb,
                                               inp.options.channel_axis))

    # -- events ---------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, TrainStep):
            self.plot.add_step(event.step, event.loss)
        elif isinstance(event, Validation):
            self.plot.add_validation(event.step, event.loss, event.dice, event.best,
                                     event.metrics.get("start_dice"))
        elif isinstance(event, Preview):
            self._show_preview(event)
        elif isinstance(event, Notice):
            notify(event)
        elif isinstance(event, Progress) and self.worker is not None:
            show_progress(self.worker, event)
        self.state.apply(event)

    def _show_preview(self, event: Preview) -> None:
        if self._run is None:
            return
        entry = self._run["inputs"].get(event.key)
        if entry is None:
            return
        ref, inp = entry
        image = ref()
        if image is None or image not in self.viewer.layers:
            return
        prob = event.probabilities
        if prob.ndim == 3 and self._run.get("class_names"):  # one plane of K classes
            # K classes: one plane's class map, small enough for the UI thread.
            from napari_segloop.core.evaluation.multiclass import class_map
            from napari_segloop.widgets.class_state import ClassPrediction
            from napari_segloop.widgets.layer_io import write_class_prediction

            minimum = self.session.class_confidence or 0.0
            pred = ClassPrediction(prob, class_map(prob, minimum), self._run["class_names"], minimum)
            write_class_prediction(self.viewer, self.session, image, pred, inp)
            return
        write_probability(self.viewer, self.session, image, event.probabilities, inp)

    def _on_returned(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(result, JobFailed):
            show_error(result.message)
            self.state.set_phase("failed")
            self.status.setText(result.message)
            return
        res, path = result.result, result.path
        label = f"{path.name} (trained)"
        self.session.set_model(res.bundle, label=label)
        self.state.set_phase("done")
        start = f"{res.baseline['dice']:.3f} → " if res.baseline else ""
        text = (f"Saved {path} after {res.steps} steps ({res.stop_reason}); held-out Dice "
                f"{start}{res.best['dice']:.3f}. It is now the current model (the Model dock "
                "switches back).")
        show_info(text)
        self.status.setText(text + ("\n" + "\n".join(res.warnings) if res.warnings else ""))

    def _on_errored(self, exc: Exception) -> None:
        self.state.set_phase("failed")
        self.status.setText(f"Training failed with an unexpected error (see the notification): {exc}")

    def _on_finished(self) -> None:
        self._cleanup()
        self._update_enabled()

    def _cleanup(self) -> None:
        run = self._run
        if run is not None:
            for layer in run["layers"]:
                layer.events.paint.disconnect(self._painted)
                layer.events.data.disconnect(self._painted)
        self._run = None
        self.worker = None
        self.control = None

    # -- continue training -------------------------------------------------------------------
    def continue_training(self) -> bool:
        """Open the images and labels stored with the loaded model, to paint more and train again."""
        from napari.utils.notifications import show_error

        bundle = self.session.bundle
        source = Path(str(getattr(bundle, "source", "") or ""))
        if bundle is None or not (source / "training").is_dir():
            show_error("The loaded model has no stored labels (only models trained by segloop do).")
            return False
        if self.session.busy:
            show_error("Wait for the running job to finish first.")
            return False
        worker = create_job_worker(_read_annotations_job, str(source), desc="segloop: reading labels")
        worker.returned.connect(self._on_annotations)
        return self.session.start_job("reading labels", worker)

    def _on_annotations(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(result, JobFailed):
            show_error(result.message)
            return
        mode, items = result
        self.clear_pairs()
        for item in items:
            image = next((lyr for lyr in self.viewer.layers if is_user_image(lyr)
                          and lyr.name == item.name), None)
            if image is None and item.image is not None:
                image = self.viewer.add_image(item.image, name=item.name, rgb=item.rgb)
            if image is None:
                show_error(f"The image {item.name!r} was not stored with the model (too large): "
                           "open it, then press Continue again.")
                return
            role = {"scribbles": SCRIBBLE_ROLE, "correction": CORRECTION_ROLE}.get(mode)
            extra = {"colormap": scribble_colormap()} if mode == "scribbles" else {}
            labels = self.viewer.add_labels(
                item.labels.copy(), name=f"{item.name} {role or 'labels'}",
                scale=layout(image, self._model_channels()).scale,
                metadata={METADATA_KEY: {"role": role, "image": item.name}} if role else {},
                **extra,
            )
            self.add_pair(image, labels)
        self.image_combo.set_layer(self.pairs[0][0]())
        self.labels_combo.set_layer(self.pairs[-1][1]())
        self._set_mode(mode)
        show_info(f"Reopened the labels of {len(items)} image(s); paint more and press Train.")

    # -- display --------------------------------------------------------------------------------
    def _show_state(self) -> None:
        self.progress_bar.setValue(int(1000 * self.state.fraction))
        if self.state.phase not in ("done", "failed"):
            self.status.setText(self.state.summary())
        self.pause_button.setText("Resume" if self.state.phase == "paused" else "Pause")

    def _update_enabled(self, *_: Any) -> None:
        running = self.control is not None
        idle = not self.session.busy
        self.train_button.setEnabled(idle and not running)
        self.pause_button.setEnabled(running and self.state.phase != "stopping")
        self.stop_button.setEnabled(running and self.state.phase != "stopping")
        source = Path(str(getattr(self.session.bundle, "source", "") or ""))
        self.continue_button.setEnabled(idle and self.session.bundle is not None
                                        and (source / "training").is_dir())


def _read_annotations_job(folder: str) -> Any:
    from napari_segloop.core.training.runs import read_annotations

    yield Progress(0, 1, "reading labels")
    return read_annotations(folder)


def _role(layer: Any) -> str | None:
    mark = getattr(layer, "metadata", {}).get(METADATA_KEY) if layer is not None else None
    return mark.get("role") if isinstance(mark, dict) else None
