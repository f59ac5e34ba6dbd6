"""The output guard: no output destroys an input, and a bad output fails before the work.

Every writer of the product (``segloop predict``, ``segloop evaluate --csv``,
the Confusion dock's CSV export, :func:`~napari_segloop.core.io.images.write_image`,
:func:`~napari_segloop.core.evaluation.report.write_metrics_csv`, and the
commands to come) checks its outputs here, before a model is loaded or an
image is read:

* an output must not be one of the inputs, nor inside an input folder (a
  model bundle): compared with ``os.stat`` identity (as :func:`os.path.samefile`:
  hard links, symbolic links, ``./a/../a`` spellings, case-insensitive file
  systems) where the paths exist, and as resolved paths otherwise;
* its suffix must be one its writer can write (:class:`OutputKind`);
* its folder must exist (or be creatable, for an output folder the command
  makes) and be writable; the output itself must not be a folder;
* two outputs of one command must not be the same file.

:meth:`InputIndex.find` (:func:`find_input`) is the one implementation of "is
this output one of the inputs"; :class:`OutputPlan` and :func:`check_outputs` collect a command's
inputs and outputs and raise :class:`~napari_segloop.core.errors.InputError`
with one sentence naming both paths.

Examples
--------
>>> plan = OutputPlan()                                   # doctest: +SKIP
>>> plan.protect("truth.tif", "the ground truth")         # doctest: +SKIP
>>> plan.add("truth.tif", "--csv", kind=CSV_OUTPUT)       # doctest: +SKIP
>>> plan.check()                                          # doctest: +SKIP
Traceback (most recent call last):
InputError: --csv truth.tif is one of the inputs (the ground truth); choose another file name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from napari_segloop.core.errors import InputError

#: Image formats the product reads (see :data:`napari_segloop.core.io.images.READ_SUFFIXES`).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")
#: Model files (state dicts, weights; see ``napari_segloop.core.bundle.settings.STATE_DICT_SUFFIXES``).
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx")


@dataclass(frozen=True)
class OutputKind:
    """What a writer can write, by file suffix.

    Attributes
    ----------
    name : str
        What is written, for messages ("CSV", "image").
    suffixes : tuple of str or None
        The suffixes it writes (lower case); None: any suffix but ``refused``.
    refused : tuple of str
        Suffixes refused although ``suffixes`` is None (likely mistakes:
        metrics written to ``x.tif``).
    """

    name: str
    suffixes: tuple[str, ...] | None = None
    refused: tuple[str, ...] = ()

    def problem(self, path: Path) -> str | None:
        """Why ``path`` cannot be written as this kind, or None."""
        suffix = path.suffix.lower()
        if self.suffixes is not None:
            if suffix in self.suffixes:
                return None
            return (f"cannot write {suffix or 'files without a suffix'}; "
                    f"use {_or_list(self.suffixes)}.")
        if suffix in self.refused:
            what = "an image" if suffix in IMAGE_SUFFIXES else "a model"
            return (f"{suffix} is {what} format, not {self.name}; "
                    f"choose a name ending in .{self.name.lower()}.")
        return None


#: Metric tables: any suffix but those of images and models.
CSV_OUTPUT = OutputKind("CSV", None, IMAGE_SUFFIXES + MODEL_SUFFIXES)


@dataclass(frozen=True)
class Protected:
    """An input that no output may overwrite (a file) or write into (a folder).

    Attributes
    ----------
    path : Path
        The file or folder, as the user spelled it.
    what : str
        What it is, for messages: "the ground truth", "the model".
    """

    path: Path
    what: str = "an input"


@dataclass(frozen=True)
class PlannedOutput:
    """One output of a command.

    Attributes
    ----------
    path : Path
    label : str
        How the user named it, for messages ("--csv", "-o"); "" for the path alone.
    kind : OutputKind or None
        Suffixes its writer can write; None: not checked.
    create_folders : bool
        The command creates the missing folders above it (an output folder).
    folder_name : bool
        The user's spelling ends with a path separator: a folder, not a file.
    """

    path: Path
    label: str = ""
    kind: OutputKind | None = None
    create_folders: bool = False
    folder_name: bool = False

    @classmethod
    def of(cls, path: PathLike, label: str = "", kind: OutputKind | None = None,
           create_folders: bool = False) -> PlannedOutput:
        """A planned output from the user's spelling (a trailing separator means a folder)."""
        text = os.fspath(path)
        seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
        return cls(Path(path), label, kind, create_folders,
                   folder_name=isinstance(text, str) and text.endswith(seps))


#: A path as the callers give it.
PathLike = str | os.PathLike
#: An input as the callers give it: a :class:`Protected`, a ``(path, what)`` pair, or a path.
InputSpec = Protected | PathLike | tuple


def protected(inputs: Iterable[InputSpec] | None) -> list[Protected]:
    """Normalise inputs: :class:`Protected`, ``(path, what)`` pairs or plain paths (None is skipped)."""
    out: list[Protected] = []
    for item in inputs or ():
        if item is None:
            continue
        if isinstance(item, Protected):
            out.append(item)
        elif isinstance(item, tuple):
            path, what = item
            if path is not None and str(path) != "":
                out.append(Protected(Path(path), what))
        elif str(item) != "":
            out.append(Protected(Path(item)))
    return out


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of an existing path (symbolic links followed), else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def _spelling(path: Path) -> str:
    """A comparable spelling of a path that may not exist."""
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop, a bad name
        resolved = os.path.abspath(path)
    return os.path.normcase(resolved)


def _ancestors(path: Path) -> list[Path]:
    """``path`` made absolute (not normalised: ``..`` may follow a link), then its parents."""
    absolute = path.absolute()
    return [absolute, *absolute.parents]


class InputIndex:
    """Inputs indexed once by file identity, so that checking many outputs stays linear.

    :meth:`find` is the one implementation of "is this output one of the
    inputs" (:func:`find_input` and every check of this module use it).

    Parameters
    ----------
    inputs : iterable
        Files (an output must not be one) and folders (an output must not be
        one nor inside one), as :class:`Protected`, ``(path, what)`` or paths.
    """

    def __init__(self, inputs: Iterable[InputSpec] | None = ()) -> None:
        self.items: list[Protected] = protected(inputs)
        self._existing: dict[tuple[int, int], Protected] = {}
        self._folders: dict[tuple[int, int], Protected] = {}
        self._missing: dict[str, Protected] = {}
        for inp in self.items:
            ident = _identity(inp.path)
            if ident is None:  # not there (yet): compared by resolved spelling
                self._missing.setdefault(_spelling(inp.path), inp)
                continue
            self._existing.setdefault(ident, inp)
            if os.path.isdir(inp.path):
                self._folders.setdefault(ident, inp)

    def find(self, output: PathLike) -> tuple[Protected, bool] | None:
        """The input ``output`` would destroy or write into, or None.

        Returns
        -------
        (Protected, bool) or None
            The input, and True when ``output`` lies inside it (a folder).
        """
        if not self.items:
            return None
        chain = _ancestors(Path(output))
        ids = [_identity(p) for p in chain]
        if ids[0] is not None and ids[0] in self._existing:
            return self._existing[ids[0]], False
        for ident in ids[1:]:
            if ident is not None and ident in self._folders:
                return self._folders[ident], True
        if self._missing:
            spellings = [_spelling(p) for p in chain]
            if spellings[0] in self._missing:
                return self._missing[spellings[0]], False
            for spelling in spellings[1:]:
                if spelling in self._missing:
                    return self._missing[spelling], True
        return None


def find_input(output: PathLike, inputs: Iterable[InputSpec] | InputIndex) -> tuple[Protected, bool] | None:
    """The input ``output`` would destroy or write into, or None (see :meth:`InputIndex.find`).

    Parameters
    ----------
    output : path
        A file to be written.
    inputs : iterable or InputIndex
        Files (``output`` must not be one) and folders (``output`` must not
        be inside one), as :class:`Protected`, ``(path, what)`` or paths.

    Returns
    -------
    (Protected, bool) or None
        The input, and True when ``output`` lies inside it (a folder).
    """
    index = inputs if isinstance(inputs, InputIndex) else InputIndex(inputs)
    return index.find(output)


def _named(out: PlannedOutput) -> str:
    return f"{out.label} {out.path}" if out.label else str(out.path)


def clash_message(out: PlannedOutput, inp: Protected, inside: bool) -> str:
    """The one-line refusal of an output that is (or is inside) an input."""
    if inside:
        return (f"{_named(out)} is inside one of the inputs ({inp.what}, {inp.path}); "
                "choose another file name.")
    same = os.path.normcase(os.path.normpath(str(inp.path))) == os.path.normcase(
        os.path.normpath(str(out.path)))
    detail = inp.what if same else f"{inp.what}, {inp.path}"
    return f"{_named(out)} is one of the inputs ({detail}); choose another file name."


def _folder_problem(out: PlannedOutput) -> str | None:
    """Why the folder of ``out`` cannot take it, or None."""
    path = out.path
    if path.is_dir() or out.folder_name:
        return f"{_named(out)}{os.sep if out.folder_name else ''} is a folder; give a file name."
    parent = path.parent
    if not os.path.isdir(parent):
        if not out.create_folders:
            if os.path.lexists(parent):
                return f"{_named(out)}: {parent} is not a folder."
            return f"{_named(out)}: the folder {parent} does not exist."
        parent = next((p for p in _ancestors(parent) if os.path.lexists(p)), Path(path.anchor))
        if not os.path.isdir(parent):
            return f"{_named(out)}: {parent} is not a folder."
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{_named(out)}: the folder {parent} is not writable."
    return None


def check_output(
    output: PlannedOutput | PathLike,
    inputs: Iterable[InputSpec] | InputIndex | None = (),
    *,
    label: str = "",
    kind: OutputKind | None = None,
    create_folders: bool = False,
) -> None:
    """Check one output against every rule of this module.

    Parameters
    ----------
    output : PlannedOutput or path
        The file to be written (with a path, ``label``, ``kind`` and
        ``create_folders`` describe it).
    inputs : iterable, optional
        What it must not destroy (see :func:`find_input`).

    Raises
    ------
    InputError
        With one sentence: the output is an input, or inside an input
        folder; its suffix cannot be written; its folder is missing or not
        writable; it is a folder.
    """
    out = output if isinstance(output, PlannedOutput) else PlannedOutput.of(
        output, label, kind, create_folders)
    found = find_input(out.path, inputs if inputs is not None else ())
    if found is not None:
        raise InputError(clash_message(out, *found))
    if out.kind is not None:
        problem = out.kind.problem(out.path)
        if problem is not None:
            raise InputError(f"{_named(out)}: {problem}")
    problem = _folder_problem(out)
    if problem is not None:
        raise InputError(problem)


def _output_key(path: Path) -> tuple:
    """Identity of an output to be written: its folder's identity and its case-folded name."""
    parent = _identity(path.parent)
    if parent is not None:
        return (*parent, path.name.casefold())
    return (_spelling(path).casefold(),)


def check_outputs(
    outputs: Iterable[PlannedOutput | PathLike],
    inputs: Iterable[InputSpec] | InputIndex | None = (),
    *,
    label: str = "",
    kind: OutputKind | None = None,
    create_folders: bool = False,
) -> None:
    """Check several outputs of one command: each as :func:`check_output`, and no two the same file.

    Names that differ only in case count as the same file (they are on
    case-insensitive file systems, macOS' and Windows' defaults).

    Raises
    ------
    InputError
        For the first output refused.
    """
    planned = [o if isinstance(o, PlannedOutput) else PlannedOutput.of(o, label, kind, create_folders)
               for o in outputs]
    index = inputs if isinstance(inputs, InputIndex) else InputIndex(inputs)
    seen: dict[tuple, PlannedOutput] = {}
    for out in planned:
        check_output(out, index)
        key = _output_key(out.path)
        if key in seen:
            raise InputError(f"{_named(seen[key])} and {_named(out)} would be the same file; "
                             "choose different names.")
        seen[key] = out


class OutputPlan:
    """A command's inputs and outputs, checked together before any work.

    Examples
    --------
    >>> plan = OutputPlan()                                            # doctest: +SKIP
    >>> plan.protect(args.truth, "the ground truth")                   # doctest: +SKIP
    >>> plan.add(args.csv, "--csv", kind=CSV_OUTPUT)                   # doctest: +SKIP
    >>> plan.check()  # raises InputError                             # doctest: +SKIP
    """

    def __init__(self, inputs: Iterable[InputSpec] | None = ()) -> None:
        self.inputs: list[Protected] = protected(inputs)
        self.outputs: list[PlannedOutput] = []

    def protect(self, path: PathLike | None, what: str = "an input") -> None:
        """Add an input file or folder (None or "" is ignored)."""
        if path is not None and str(path) != "":
            self.inputs.append(Protected(Path(path), what))

    def add(
        self,
        path: PathLike,
        label: str = "",
        *,
        kind: OutputKind | None = None,
        create_folders: bool = False,
    ) -> Path:
        """Add an output file; returns its path."""
        out = PlannedOutput.of(path, label, kind, create_folders)
        self.outputs.append(out)
        return out.path

    def check(self) -> None:
        """Check every output (see :func:`check_outputs`).

        Raises
        ------
        InputError
            For the first output refused.
        """
        check_outputs(self.outputs, self.inputs)


def _or_list(items: tuple[str, ...]) -> str:
    items = tuple(dict.fromkeys(items))
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
