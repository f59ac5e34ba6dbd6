"""The "New model" form shared by the Model and Fine-tune docks: preset, architecture, encoder, options.

The form is a view of :mod:`napari_segloop.core.models.presets` and the
registry: picking a preset fills the fields, changing the architecture
offers its encoders, and the architecture's own settings (base width,
attention gates, deep supervision) are enabled only where it takes them.
:meth:`NewModelForm.choice` returns what :func:`create_model` needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from napari_segloop.core.models.presets import PRESETS, find_preset
from napari_segloop.core.models.registry import allowed_options, architectures, get_spec

__all__ = ["CUSTOM", "NewModelChoice", "NewModelForm"]

#: The preset entry meaning "the fields as set by hand".
CUSTOM = "custom (set the fields below)"


@dataclass(frozen=True)
class NewModelChoice:
    """What to build: ``create_model(architecture, encoder, encoder_weights=weights, **options)``."""

    architecture: str
    encoder: str
    weights: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Classes with background: 2 is binary (one sigmoid output), K >= 3 a softmax model.
    classes: int = 2
    #: Names of the K classes, background first (None: "background", "class 1", ...).
    class_names: tuple[str, ...] | None = None

    @property
    def model_classes(self) -> int:
        """The ``classes`` argument of ``create_model``: 1 for binary, else K."""
        return 1 if self.classes <= 2 else int(self.classes)

    def build(self, in_channels: int) -> Any:
        """Create the untrained model (call it in a worker: building can take a while)."""
        from napari_segloop.core.models.registry import create_model

        bundle = create_model(self.architecture, self.encoder, in_channels, self.model_classes,
                              self.weights, **self.options)
        if self.class_names and self.classes >= 3:
            bundle.settings.class_names = list(self.class_names)
        return bundle

    @property
    def label(self) -> str:
        """Short name for folders and messages, e.g. ``UNet3Plus-vgg16-attention``."""
        flags = [k for k in ("attention", "deep_supervision") if self.options.get(k)]
        return "-".join([self.architecture, self.encoder, *flags])


def _shape(choice: NewModelChoice) -> tuple[str, str, dict[str, Any]]:
    return choice.architecture, choice.encoder, choice.options


class NewModelForm(QWidget):
    """Preset, architecture, encoder, encoder weights, and the architecture's own settings.

    Parameters
    ----------
    architecture, encoder : str
        Initial choice (for example from the saved settings).
    parent : QWidget, optional
    """

    def __init__(self, architecture: str = "Unet", encoder: str = "tu-lcnet_075",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem(CUSTOM)
        for p in PRESETS:
            self.preset_combo.addItem(p.label)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, p.note,
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setToolTip("The architectures of the courses and papers, ready to build.")
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(architectures())
        self.encoder_combo = QComboBox()
        self.encoder_combo.setEditable(True)
        self.encoder_combo.setToolTip("'plain': the network's own encoder; otherwise any "
                                      "segmentation-models-pytorch encoder, or tu-<timm model name>.")
        self.weights_combo = QComboBox()
        self.weights_combo.addItems(["none", "imagenet"])
        self.weights_combo.setToolTip(
            "Pre-trained encoder weights. 'imagenet' needs the network unless they are cached; "
            "freezing the encoder (feature extraction) only makes sense with them.")
        self.base_spin = QSpinBox()
        self.base_spin.setRange(4, 128)
        self.base_spin.setValue(64)
        self.base_spin.setToolTip("Width of the first level of the plain encoder; it doubles at "
                                  "each pooling (64 in the U-Net paper; 16-32 train faster on a CPU).")
        self.attention_check = QCheckBox("attention gates")
        self.deep_check = QCheckBox("deep supervision")
        self.deep_check.setToolTip("Train an output head at every decoder level (UNet 3+).")
        self.classes_spin = QSpinBox()
        self.classes_spin.setRange(2, 32)
        self.classes_spin.setValue(2)
        self.classes_spin.setToolTip(
            "Classes with background. 2: objects and background (binary). 3 or more: a softmax "
            "model; scribbles then use 1 to K-1 for the classes and K for background, dense "
            "labels 0 for background and 1 to K-1 for the classes.")
        self.names_edit = QLineEdit()
        self.names_edit.setPlaceholderText("background, nucleus, border")
        self.names_edit.setToolTip("Optional names of the classes, background first, separated by commas.")
        form.addRow("Preset", self.preset_combo)
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Encoder", self.encoder_combo)
        form.addRow("Encoder weights", self.weights_combo)
        form.addRow("Base width", self.base_spin)
        form.addRow("", self.attention_check)
        form.addRow("", self.deep_check)
        form.addRow("Classes", self.classes_spin)
        form.addRow("Class names", self.names_edit)
        self.classes_spin.valueChanged.connect(self._update_enabled)
        self._filling = False
        self._applied: NewModelChoice | None = None
        #: Settings of the last preset that no field shows (kept while its architecture is chosen).
        self._extra: tuple[str, dict[str, Any]] = ("", {})
        self.arch_combo.currentTextChanged.connect(self._architecture_changed)
        self.encoder_combo.currentTextChanged.connect(self._update_enabled)
        self.preset_combo.currentTextChanged.connect(self._preset_changed)
        for signal in (self.arch_combo.currentTextChanged, self.encoder_combo.currentTextChanged,
                       self.base_spin.valueChanged, self.attention_check.toggled,
                       self.deep_check.toggled):
            signal.connect(self._edited)
        index = self.arch_combo.findText(architecture, Qt.MatchFlag.MatchFixedString)
        self._filling = True
        self.arch_combo.setCurrentIndex(max(index, self.arch_combo.findText("Unet")))
        self._architecture_changed(self.arch_combo.currentText())
        self.encoder_combo.setCurrentText(encoder)
        self._filling = False
        self._update_enabled()

    # ------------------------------------------------------------------ state

    def _takes(self, option: str) -> bool:
        return option in allowed_options(get_spec(self.arch_combo.currentText()))

    def _architecture_changed(self, name: str) -> None:
        spec = get_spec(name)
        was = self.encoder_combo.currentText().strip()
        self.encoder_combo.blockSignals(True)
        self.encoder_combo.clear()
        self.encoder_combo.addItems(list(spec.encoders) or [spec.default_encoder])
        # An smp architecture takes any smp encoder: keep the one typed; otherwise its own list.
        keep = bool(was) and (was in spec.encoders or (spec.family == "smp" and was != "plain"))
        self.encoder_combo.setCurrentText(was if keep else spec.default_encoder)
        self.encoder_combo.blockSignals(False)
        self._update_enabled()

    def _update_enabled(self, *_: Any) -> None:
        plain = self.encoder_combo.currentText().strip() == "plain"
        self.base_spin.setEnabled(self._takes("base_channels") and plain)
        self.attention_check.setEnabled(self._takes("attention"))
        self.deep_check.setEnabled(self._takes("deep_supervision"))
        self.encoder_combo.setEnabled(get_spec(self.arch_combo.currentText()).encoders != ("plain",))
        self.weights_combo.setEnabled(not plain)
        self.names_edit.setEnabled(self.classes_spin.value() >= 3)

    def _preset_changed(self, label: str) -> None:
        if label == CUSTOM:
            return
        preset = find_preset(label)
        shown = ("base_channels", "attention", "deep_supervision")
        self._extra = (preset.architecture,
                       {k: v for k, v in preset.options.items() if k not in shown})
        self._filling = True
        try:
            self.arch_combo.setCurrentText(preset.architecture)
            self.encoder_combo.setCurrentText(preset.encoder)
            self.base_spin.setValue(int(preset.options.get("base_channels", self.base_spin.value())))
            self.attention_check.setChecked(bool(preset.options.get("attention", False)))
            self.deep_check.setChecked(bool(preset.options.get("deep_supervision", False)))
        finally:
            self._filling = False
        self._update_enabled()
        self._applied = self.choice()

    def _edited(self, *_: Any) -> None:
        # A field changed by hand after a preset was applied: the form no longer shows the preset.
        if not self._filling and self.preset_combo.currentText() != CUSTOM \
                and self._applied is not None and _shape(self.choice()) != _shape(self._applied):
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentText(CUSTOM)
            self.preset_combo.blockSignals(False)

    # ------------------------------------------------------------------ result

    def choice(self) -> NewModelChoice:
        """The architecture, encoder, weights and settings the form shows."""
        arch = self.arch_combo.currentText()
        options: dict[str, Any] = dict(self._extra[1]) if self._extra[0] == arch else {}
        if self.base_spin.isEnabled():
            options["base_channels"] = self.base_spin.value()
        if self.attention_check.isEnabled():
            options["attention"] = self.attention_check.isChecked()
        if self.deep_check.isEnabled():
            options["deep_supervision"] = self.deep_check.isChecked()
        weights = self.weights_combo.currentText() if self.weights_combo.isEnabled() else "none"
        k = self.classes_spin.value()
        names = tuple(n.strip() for n in self.names_edit.text().split(",") if n.strip())
        return NewModelChoice(arch, self.encoder_combo.currentText().strip(), weights, options, k,
                              names if len(names) == k and k >= 3 else None)

    def names_problem(self) -> str | None:
        """Why the class names cannot be used (None when they can, or none are given)."""
        k = self.classes_spin.value()
        names = [n.strip() for n in self.names_edit.text().split(",") if n.strip()]
        if not names:
            return None
        if k < 3:
            return "Class names are for models of 3 or more classes; leave them empty for a binary model."
        if len(names) != k:
            return (f"{len(names)} class name(s) for {k} classes: give one per class, background "
                    "first, separated by commas.")
        return None
