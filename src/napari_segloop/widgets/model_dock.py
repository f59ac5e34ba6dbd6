"""The Model dock: load, create and describe the model every other dock uses.

Loading and creating run in a napari worker; the model is replaced only when
the new one is ready, so a failed load (a corrupt file, weights of another
architecture, no network for ImageNet weights) shows an error naming the file
and keeps the previous model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_segloop.core import bundle as core_bundle
from napari_segloop.core.events import Notice, Progress
from napari_segloop.widgets.jobs import JobFailed, create_job_worker, notify, show_progress
from napari_segloop.widgets.new_model_form import NewModelForm
from napari_segloop.widgets.session import MaskSettings, session_for, unwrap
from napari_segloop.widgets.settings import UserSettings

#: Suggestions for the encoder field (any smp encoder or ``tu-<timm name>`` is accepted).
COMMON_ENCODERS = (
    "resnet18", "resnet34", "resnet50", "efficientnet-b0", "mobilenet_v2",
    "tu-lcnet_050", "tu-mobilenetv3_small_100", "tu-convnext_tiny",
)


def load_job(spec: str, architecture: str | None, encoder: str | None,
             in_channels: int, allow_torchscript: bool = False) -> Generator[Progress, None, Any]:
    """Load a model in a worker (``"default"``, a bundle folder, a weights file or a bioimage.io package)."""
    yield Progress(0, 1, "loading")
    bundle = core_bundle.load_model(spec, architecture, encoder, in_channels,
                                    allow_torchscript=allow_torchscript)
    yield Progress(1, 1)
    return bundle


def export_job(bundle: Any, fmt: str, path: str, meta: Any,
               overwrite: bool) -> Generator[Any, None, Any]:
    """Export the model in a worker (:func:`napari_segloop.core.export.export_model`)."""
    from napari_segloop.core.export import export_model

    return (yield from export_model(bundle, fmt, path, meta, overwrite=overwrite))


def save_job(bundle: Any, folder: str, overwrite: bool, mask: Any) -> Generator[Progress, None, Any]:
    """Save the model as a new bundle folder in a worker (with the mask settings on screen)."""
    yield Progress(0, 1, "saving")
    saved = core_bundle.save_bundle_as(
        bundle, folder, overwrite=overwrite,
        threshold=None if mask is None else mask.threshold,
        postprocess=None if mask is None else mask.postprocess,
    )
    yield Progress(1, 1)
    return saved


def create_job(architecture: str, encoder: str, in_channels: int, encoder_weights: str | None,
               options: dict[str, Any] | None = None, classes: int = 1,
               class_names: list[str] | None = None) -> Generator[Progress, None, Any]:
    """Create a new, untrained model in a worker (``classes``: 1 binary, K >= 2 softmax)."""
    yield Progress(0, 1, "creating")
    bundle = core_bundle.create_model(architecture, encoder, in_channels, classes, encoder_weights,
                                      **(options or {}))
    if class_names and classes > 1:
        bundle.settings.class_names = list(class_names)
    yield Progress(1, 1)
    return bundle


class ModelDock(QWidget):
    """Load the default model, a bundle folder or a weights file, or create a new model.

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
        self.worker: Any = None
        self._done: Callable[[Any], None] | None = None
        self._build()
        self._connect_session()
        self._show_model(self.session.bundle)
        self._show_versions()
        self._update_device_label()
        self._update_enabled()

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)

        self.table = QTableWidget(0, 2, self)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setVisible(False)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(True)
        self.table.setToolTip("The loaded model, as `segloop info` describes it.")
        self.table.setMinimumHeight(180)
        layout.addWidget(QLabel("<b>Current model</b>"))
        layout.addWidget(self.table, 1)  # extra height goes to the description

        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        layout.addWidget(self.device_label)

        versions_row = QHBoxLayout()
        self.versions_combo = QComboBox()
        self.versions_combo.setToolTip(
            "Every model used in this window: loaded, created or trained (newest last). "
            "Switch back to a previous model at any time; nothing is overwritten."
        )
        self.switch_button = QPushButton("Use")
        self.switch_button.setToolTip("Make the model chosen on the left the current model.")
        self.switch_button.clicked.connect(lambda: self.switch_version())
        versions_row.addWidget(QLabel("Models this session"))
        versions_row.addWidget(self.versions_combo, 1)
        versions_row.addWidget(self.switch_button)
        layout.addLayout(versions_row)

        self.default_button = QPushButton("Load built-in default model")
        self.default_button.setToolTip("The nuclei model shipped with napari-segloop.")
        self.default_button.clicked.connect(self.load_default)
        layout.addWidget(self.default_button)

        layout.addWidget(QLabel("<b>Load from disk</b>"))
        form = QFormLayout()
        path_row = QHBoxLayout()
        self.path_edit = QLineEdit(self.settings.last_model_path)
        self.path_edit.setPlaceholderText("bundle folder, .pt/.safetensors file or bioimage.io .zip")
        self.path_edit.returnPressed.connect(self.load_from_field)
        self.folder_button = QPushButton("Choose folder…")
        self.folder_button.setToolTip("Choose a model bundle folder and load it.")
        self.folder_button.clicked.connect(self._browse_folder)
        self.file_button = QPushButton("Choose weights file…")
        self.file_button.setToolTip(
            "Choose a plain PyTorch state dict and load it with the architecture, encoder and "
            "input channels under 'Weights file: architecture'."
        )
        self.file_button.clicked.connect(self._browse_file)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the bundle folder or weights file named in the field.")
        self.load_button.clicked.connect(self.load_from_field)
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.load_button)
        form.addRow("Path", path_row)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.folder_button)
        buttons.addWidget(self.file_button)
        layout.addLayout(buttons)

        self.weights_section = QCollapsible("Weights file: architecture", self)
        weights = QWidget()
        weights_form = QFormLayout(weights)
        self.arch_combo = self._architecture_combo(self.settings.architecture)
        self.encoder_combo = self._encoder_combo(self.settings.encoder)
        self.channels_spin = self._channels_spin(self.settings.in_channels)
        weights_form.addRow("Architecture", self.arch_combo)
        weights_form.addRow("Encoder", self.encoder_combo)
        weights_form.addRow("Input channels", self.channels_spin)
        self.torchscript_check = QCheckBox("Allow TorchScript weights of bioimage.io packages")
        self.torchscript_check.setToolTip(
            "TorchScript is a program written by the model's author. Packages are loaded from their "
            "PyTorch state dict or ONNX weights; allow this only for a package you trust that has "
            "TorchScript weights only."
        )
        weights_form.addRow(self.torchscript_check)
        note = QLabel("Needed only for plain weights files; bundle folders describe themselves.")
        note.setWordWrap(True)
        note.setStyleSheet("color: gray;")
        weights_form.addRow(note)
        self.weights_section.addWidget(weights)
        layout.addWidget(self.weights_section)
        self.path_edit.textChanged.connect(self._path_changed)
        self._path_changed(self.path_edit.text())

        self.new_section = QCollapsible("New model", self)
        new = QWidget()
        new_form = QFormLayout(new)
        self.new_form = NewModelForm(self.settings.architecture, self.settings.encoder)
        self.new_channels_spin = self._channels_spin(self.settings.in_channels)
        self.create_button = QPushButton("Create untrained model")
        self.create_button.clicked.connect(self.create_new)
        new_form.addRow(self.new_form)
        new_form.addRow("Input channels", self.new_channels_spin)
        new_form.addRow(self.create_button)
        self.new_section.addWidget(new)
        layout.addWidget(self.new_section)

        self.save_button = QPushButton("Save model as…")
        self.save_button.setToolTip(
            "Save the loaded model as a new bundle folder, with the threshold and post-processing "
            "of the mask shown by the Threshold dock; `segloop predict --model FOLDER --threshold "
            "auto` then gives that mask. An existing folder is replaced only if you confirm."
        )
        self.save_button.clicked.connect(self._browse_save)
        layout.addWidget(self.save_button)
        self._build_export(layout)

        self.status = QLabel()
        # Messages quote names from model files: never interpret them as rich text.
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _build_export(self, layout: QVBoxLayout) -> None:
        """The "Export for other tools" section: format, the bioimage.io fields, Export…."""
        from napari_segloop.core.export import FORMATS
        from napari_segloop.core.export.metadata import DEFAULT_LICENSE

        self.export_section = QCollapsible("Export for other tools", self)
        box = QWidget()
        form = QFormLayout(box)
        self.format_combo = QComboBox()
        for key, text in FORMATS.items():
            self.format_combo.addItem(key, key)
            self.format_combo.setItemData(self.format_combo.count() - 1, text,
                                          Qt.ItemDataRole.ToolTipRole)
        self.format_combo.setToolTip("bioimageio: Fiji/DeepImageJ, ilastik, QuPath, the model zoo; "
                                     "onnx, torchscript, torch-export: single files for other code.")
        self.export_name = QLineEdit()
        self.export_name.setPlaceholderText("e.g. Nuclei in DAPI widefield (default: the model's name)")
        self.export_description = QLineEdit()
        self.export_description.setPlaceholderText("what it segments, in which images")
        self.export_authors = QLineEdit()
        self.export_authors.setPlaceholderText("Name; affiliation; ORCID — several separated by |")
        self.export_license = QLineEdit(DEFAULT_LICENSE)
        self.export_license.setToolTip("An SPDX licence id (CC-BY-4.0, MIT, ...).")
        self.export_cite = QLineEdit()
        self.export_cite.setPlaceholderText("text; DOI or URL (the architecture's paper is always cited)")
        form.addRow("Format", self.format_combo)
        form.addRow("Name", self.export_name)
        form.addRow("Description", self.export_description)
        form.addRow("Authors", self.export_authors)
        form.addRow("Licence", self.export_license)
        form.addRow("Cite", self.export_cite)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Write the model in the chosen format. The file is checked against the model before "
            "it is kept (a bioimage.io package is also tested with bioimageio.core); an existing "
            "file is replaced only if you confirm. See docs/sharing.md."
        )
        self.export_button.clicked.connect(self._browse_export)
        form.addRow(self.export_button)
        self.export_section.addWidget(box)
        layout.addWidget(self.export_section)

    def export_meta(self) -> Any:
        """The bioimage.io fields as typed (raises ValueError for a malformed author or citation)."""
        from napari_segloop.core.export import Author, Citation, ExportMeta
        from napari_segloop.core.export.metadata import default_name

        bundle = self.session.bundle
        default = default_name("default" if bundle is None else str(bundle.source))
        authors = [Author.parse(a) for a in self.export_authors.text().split("|") if a.strip()]
        cite = self.export_cite.text().strip()
        return ExportMeta(name=self.export_name.text().strip() or default,
                          description=self.export_description.text().strip(), authors=authors,
                          license=self.export_license.text().strip() or "CC-BY-4.0",
                          citations=[Citation.parse(cite)] if cite else [])

    def _browse_export(self) -> None:
        from qtpy.QtWidgets import QMessageBox

        from napari_segloop.core.export import SUFFIXES

        fmt = str(self.format_combo.currentData())
        suffix = SUFFIXES[fmt]
        path, _ = QFileDialog.getSaveFileName(
            self, f"Export the model ({fmt})", self._start_dir(), f"{fmt} (*{suffix})",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if not path:
            return
        if not path.lower().endswith(suffix):
            path += suffix
        overwrite = False
        if Path(path).exists():
            answer = QMessageBox.question(self, "Replace the existing file?",
                                          f"{path} already exists. Replace it with this export?")
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText("Not exported: the file exists and was kept.")
                return
            overwrite = True
        self.export_to(path, fmt, overwrite=overwrite)

    def export_to(self, path: str, fmt: str | None = None, overwrite: bool = False) -> bool:
        """Export the loaded model to ``path`` in a worker (``fmt``: default the format chosen).

        Returns
        -------
        bool
            False if no model is loaded, a field is malformed, or another job runs.
        """
        from napari.utils.notifications import show_error

        bundle = self.session.bundle
        if bundle is None:
            self.status.setText("No model is loaded: load or create one first.")
            return False
        fmt = fmt or str(self.format_combo.currentData())
        try:
            meta = self.export_meta()
        except ValueError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return False
        worker = create_job_worker(export_job, bundle, fmt, str(path), meta, bool(overwrite),
                                   desc=f"segloop: exporting ({fmt})")

        def done(result: Any) -> None:
            if isinstance(result, JobFailed):
                self._failed(str(path), result.message, verb="export the model to")
                return
            gaps = ", ".join(f"{k} {v:.1e}" for k, v in result.parity.items())
            tested = f"; bioimage.io model test {result.test}" if result.test else ""
            self.status.setText(f"Exported to {result.path} (largest difference from the model: "
                                f"{gaps}{tested}).")

        worker.yielded.connect(self._on_export_event)
        return self._start(worker, done, f"Exporting to {path}…")

    def _on_export_event(self, event: Any) -> None:
        """Progress of an export moves the bar and names the step; notices become notifications."""
        if isinstance(event, Progress):
            show_progress(self.worker, event)
            # The last step is left to the result (Qt may deliver it after the result itself).
            if event.message and event.done < event.total:
                self.status.setText(f"Exporting: {event.message}…")
        elif isinstance(event, Notice):
            notify(event)

    @staticmethod
    def _architecture_combo(current: str) -> QComboBox:
        combo = QComboBox()
        combo.addItems(core_bundle.architectures())
        index = combo.findText(current, Qt.MatchFlag.MatchFixedString)
        combo.setCurrentIndex(max(index, combo.findText("Unet")))
        return combo

    @staticmethod
    def _encoder_combo(current: str) -> QComboBox:
        combo = QComboBox()
        combo.setEditable(True)
        combo.addItems(COMMON_ENCODERS)
        combo.setCurrentText(current)
        combo.setToolTip("Any segmentation-models-pytorch encoder, or tu-<timm model name>.")
        return combo

    @staticmethod
    def _channels_spin(value: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(1, 64)
        spin.setValue(value)
        return spin

    def _connect_session(self) -> None:
        pairs = [
            (self.session.model_changed, self._show_model),
            (self.session.model_changed, self._update_enabled),
            (self.session.busy_changed, self._update_enabled),
            (self.session.device_changed, self._update_device_label),
            (self.session.versions_changed, self._show_versions),
            (self.session.model_changed, self._show_versions),
        ]
        for signal, slot in pairs:
            signal.connect(slot)

        session, dock = self.session, self

        def _on_destroyed(*_: Any) -> None:
            for signal, slot in pairs:
                signal.disconnect(slot, missing_ok=True)
            job = session.job
            if job is not None and job.worker is dock.worker:
                job.worker.quit()

        self.destroyed.connect(_on_destroyed)

    # -- display -------------------------------------------------------------
    def _show_model(self, bundle: Any = None) -> None:
        if bundle is None:
            rows = [("model", "none loaded (Predict loads the default model on first run)")]
        else:
            rows = list(bundle.describe().items())
        self.table.setRowCount(len(rows))
        for i, (key, value) in enumerate(rows):
            for j, text in enumerate((key, value)):
                item = QTableWidgetItem(str(text))
                item.setToolTip(str(text))
                item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
                self.table.setItem(i, j, item)
        self.table.resizeRowsToContents()

    def _show_versions(self, *_: Any) -> None:
        combo = self.versions_combo
        combo.blockSignals(True)
        combo.clear()
        current = 0
        for i, version in enumerate(self.session.versions):
            in_use = version.bundle is self.session.bundle
            combo.addItem(version.label + ("  (in use)" if in_use else ""))
            if in_use:
                current = i
        combo.setCurrentIndex(current if self.session.versions else -1)
        combo.blockSignals(False)
        self._update_enabled()

    def switch_version(self, index: int | None = None) -> bool:
        """Make the session's model version ``index`` (default: the one chosen) the current model.

        Returns
        -------
        bool
            False while a job runs or when there is nothing to switch to.
        """
        index = self.versions_combo.currentIndex() if index is None else index
        versions = self.session.versions
        if self.session.busy or not 0 <= index < len(versions):
            return False
        version = versions[index]
        if version.bundle is not self.session.bundle:
            self.session.set_model(version.bundle)
        self.status.setText(f"Using {version.label}.")
        return True

    def _update_device_label(self, *_: Any) -> None:
        requested = self.session.device
        used = self.session.resolved_device()
        self.device_label.setText(
            f"Device: <b>{used}</b>"
            + (" (auto)" if requested in ("", "auto") else "")
            + f" &nbsp; available: {', '.join(self.session.devices)}"
        )

    def _update_enabled(self, *_: Any) -> None:
        idle = not self.session.busy
        for widget in (self.default_button, self.load_button, self.folder_button, self.file_button,
                       self.create_button):
            widget.setEnabled(idle)
        self.save_button.setEnabled(idle and self.session.bundle is not None)
        self.export_button.setEnabled(idle and self.session.bundle is not None)
        self.switch_button.setEnabled(idle and len(self.session.versions) > 1)

    # -- actions -------------------------------------------------------------
    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder", self._start_dir())
        if folder:
            self.path_edit.setText(folder)
            self.load_from_field()

    def _browse_file(self) -> None:
        pattern = " ".join(f"*{s}" for s in core_bundle.STATE_DICT_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(
            self, "Model weights file or bioimage.io package", self._start_dir(),
            f"Models ({pattern} *.zip *.yaml);;bioimage.io packages (*.zip *.yaml);;All files (*)"
        )
        if path:
            self.path_edit.setText(path)
            self.load_from_field()

    def _browse_save(self) -> None:
        from qtpy.QtWidgets import QMessageBox

        folder, _ = QFileDialog.getSaveFileName(
            self, "Save model as a bundle folder", self._start_dir(), "Model bundle folder (*)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if not folder:
            return
        overwrite = False
        if Path(folder).exists():
            answer = QMessageBox.question(
                self, "Replace the existing folder?",
                f"{folder} already exists. Replace it with this model? (The old folder stays "
                "intact until the new bundle is completely written.)",
            )
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText("Not saved: the folder exists and was kept.")
                return
            overwrite = True
        self.save_as(folder, overwrite=overwrite)

    def save_as(self, folder: str, overwrite: bool = False) -> bool:
        """Save the loaded model as a new bundle ``folder`` in a worker.

        The threshold and post-processing of the mask on screen (the Threshold
        dock's) are stored with it. An existing ``folder`` is refused unless
        ``overwrite`` (the user confirmed). On success the session's model is
        the saved bundle, so "Save threshold to model" writes there.

        Returns
        -------
        bool
            False if no model is loaded or another job runs (nothing started).
        """
        bundle = self.session.bundle
        if bundle is None:
            self.status.setText("No model is loaded: load or create one first.")
            return False
        mask = self.session.mask_settings
        if bundle.classes > 1:
            # A K-class model keeps its minimum confidence (the Classes dock's), not the Threshold
            # dock's threshold of one class's binary view.
            confidence = self.session.class_confidence
            mask = None if confidence is None else MaskSettings(confidence, bundle.settings.postprocess)
        worker = create_job_worker(save_job, bundle, str(folder), bool(overwrite), mask,
                                   desc="segloop: saving model")

        def done(result: Any) -> None:
            if isinstance(result, JobFailed):
                self._failed(str(folder), result.message, verb="save the model to")
                return
            # Same network, new settings and source: no re-prediction is needed.
            if self.session.bundle is bundle:
                bundle.settings, bundle.source = result.settings, result.source
                self.session.model_changed.emit(bundle)
            self.settings.last_model_path = str(folder)
            what = "threshold" if bundle.classes == 1 else "minimum confidence"
            shown = "mask" if bundle.classes == 1 else "class map"
            self.status.setText(
                f"Saved as {folder} ({what} {result.settings.threshold:.6g}). "
                f"`segloop predict --model {folder} --threshold auto` gives the {shown} on screen.")

        return self._start(worker, done, f"Saving to {folder}…")

    def _path_changed(self, text: str) -> None:
        """Show the architecture fields when the path is a weights file (they are needed then)."""
        if text.strip() and Path(text.strip()).is_file() and not self.weights_section.isExpanded():
            self.weights_section.expand(animate=False)

    def _start_dir(self) -> str:
        text = self.path_edit.text().strip()
        return str(Path(text).parent) if text else str(Path.home())

    def load_default(self) -> bool:
        """Load the built-in default model in the background."""
        return self.load("default")

    def load_from_field(self) -> bool:
        """Load the bundle folder or weights file named in the path field."""
        text = self.path_edit.text().strip()
        if not text:
            self.status.setText("Enter or choose a model folder or file first.")
            return False
        return self.load(text, self.arch_combo.currentText(), self.encoder_combo.currentText().strip(),
                         self.channels_spin.value())

    def load(self, spec: str, architecture: str | None = None, encoder: str | None = None,
             in_channels: int = 1) -> bool:
        """Load ``spec`` (``"default"``, a bundle folder or a weights file) in a worker.

        Returns
        -------
        bool
            False if another job is running (nothing started).
        """
        is_file = spec != "default" and Path(spec).is_file()
        worker = create_job_worker(load_job, spec, architecture if is_file else None,
                                   encoder if is_file else None, in_channels,
                                   self.torchscript_check.isChecked(),
                                   desc="segloop: loading model")

        def done(result: Any) -> None:
            if isinstance(result, JobFailed):
                self._failed(spec, result.message)
                return
            if spec != "default":
                self.settings.last_model_path = spec
                if is_file:
                    self.settings.architecture = str(architecture)
                    self.settings.encoder = str(encoder)
                    self.settings.in_channels = int(in_channels)
            self._accept(result, f"Loaded {spec}.")

        return self._start(worker, done, f"Loading {spec}…")

    def create_new(self) -> bool:
        """Create an untrained model with the choices in the "New model" section."""
        from napari.utils.notifications import show_error

        if (problem := self.new_form.names_problem()) is not None:
            show_error(problem)
            return False
        choice = self.new_form.choice()
        arch, encoder, weights = choice.architecture, choice.encoder, choice.weights
        channels = self.new_channels_spin.value()
        worker = create_job_worker(create_job, arch, encoder, channels, weights, choice.options,
                                   choice.model_classes, list(choice.class_names or []) or None,
                                   desc="segloop: creating model")

        def done(result: Any) -> None:
            if isinstance(result, JobFailed):
                self._failed(f"a new {arch} with {encoder}", result.message, verb="create")
                return
            self.settings.architecture, self.settings.encoder = arch, encoder
            self.settings.in_channels = channels
            self._accept(result, f"Created an untrained {choice.label} ({weights} weights).")

        return self._start(worker, done, f"Creating {arch} with {encoder}…")

    def _start(self, worker: Any, done: Callable[[Any], None], message: str) -> bool:
        if self.session.busy:
            self.status.setText("Wait for the running job to finish (or cancel it) first.")
            return False
        # Bound methods of this QObject (not lambdas): Qt drops the connections if the dock is closed.
        self._done = done
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        self.worker = worker
        self.status.setText(message)
        return self.session.start_job("model", worker)

    def _on_returned(self, result: Any) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(result)

    def _on_errored(self, exc: Exception) -> None:
        self._done = None
        self.status.setText(f"Failed with an unexpected error (see the notification): {exc}")

    def _accept(self, bundle: Any, message: str) -> None:
        self.session.set_model(bundle)
        self.status.setText(message)

    def _failed(self, what: str, message: str, verb: str = "load") -> None:
        from napari.utils.notifications import show_error

        text = message if what in message else f"Could not {verb} {what}: {message}"
        kept = "the previous model is still loaded" if self.session.bundle else "no model is loaded"
        self.status.setText(f"{text} ({kept})")
        show_error(f"{text} ({kept}).")
