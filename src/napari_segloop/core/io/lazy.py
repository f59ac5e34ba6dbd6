"""Images read region by region, never whole: zarr, OME-Zarr, dask arrays and large TIFFs.

:class:`LazyImage` wraps anything with ``shape``, ``dtype`` and NumPy-style
slicing (a :class:`zarr.Array`, a :class:`dask.array.Array`, tifffile's zarr
store of a TIFF, a NumPy memory map) together with what its file says about
its axes and pixel size. :meth:`LazyImage.read` returns one region as a NumPy
array; nothing else is read.

* ``.zarr`` folders: a zarr array, or an OME-Zarr image (NGFF 0.4 on zarr v2,
  0.5 on zarr v3; a bioformats2raw folder whose image is its group ``0``).
  The full-resolution level is read; the axes (``tczyx`` names) and the scale
  of that level come from the ``multiscales`` metadata.
* TIFF files through tifffile's zarr store (``aszarr=True``): the first series
  at full resolution, read tile by tile (or strip by strip); axes as tifffile
  names them (``YXS``, ``CYX``, ``ZYX``) and the pixel size from the
  resolution tags where they are set.
* In napari: a layer's dask or zarr data (:func:`as_lazy`), the first level of
  a multiscale layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = ["LazyImage", "as_lazy", "is_zarr_path", "open_lazy"]

#: OME-Zarr axis names, as one upper-case letter per axis (the TIFF convention the rest uses).
_OME_LETTERS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


@dataclass
class LazyImage:
    """An image read region by region.

    Attributes
    ----------
    array : array-like
        ``shape``, ``dtype`` and slicing with tuples of ints and slices.
    axes : str or None
        One upper-case letter per axis (``"CYX"``, ``"ZYX"``, ``"YXS"``), when the file says.
    scale : tuple of float or None
        Pixel size along each axis (1 where unknown), when the file says.
    units : tuple of str or None
        Unit of each axis (``"micrometer"``), or None.
    source : str
        Where it came from, for messages.
    """

    array: Any
    axes: str | None = None
    scale: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    source: str = "array"
    _closers: list[Any] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(n) for n in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype."""
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.array.shape)

    @property
    def nbytes(self) -> int:
        """Decoded size in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, index: tuple[Any, ...]) -> np.ndarray:
        """Read one region (a tuple of ints and slices) as a NumPy array.

        Raises
        ------
        InputError
            When the store cannot be read (a missing or corrupt chunk, a codec that is not installed).
        """
        try:
            region = self.array[index]
            if hasattr(region, "compute"):
                region = region.compute()
            return np.asarray(region)
        except InputError:
            raise
        except Exception as exc:  # zarr, numcodecs, tifffile and dask raise many kinds
            raise InputError(f"{self.source}: cannot read the region {_region_text(index)} "
                             f"({type(exc).__name__}: {_first_line(exc)}).") from exc

    def close(self) -> None:
        """Close the files behind the array (a TIFF's store)."""
        while self._closers:
            try:
                self._closers.pop().close()
            except Exception:  # closing is best effort
                pass

    def __enter__(self) -> LazyImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _region_text(index: tuple[Any, ...]) -> str:
    parts = []
    for i in index:
        if isinstance(i, slice):
            parts.append(f"{i.start or 0}:{'' if i.stop is None else i.stop}")
        else:
            parts.append(str(i))
    return "[" + ", ".join(parts) + "]"


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a ``.zarr`` name (existing or not) or a folder that is a zarr store."""
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        return True
    return p.is_dir() and any((p / name).exists() for name in ("zarr.json", ".zgroup", ".zarray"))


def as_lazy(data: Any, axes: str | None = None, scale: tuple[float, ...] | None = None,
            source: str = "the layer") -> LazyImage:
    """A napari layer's data as a :class:`LazyImage` (the first level of a multiscale list)."""
    if isinstance(data, list | tuple):
        if not data:
            raise InputError(f"{source} has no data.")
        data = data[0]
    return LazyImage(data, axes=axes, scale=scale, source=source)


def open_lazy(path: str | os.PathLike) -> LazyImage:
    """Open a ``.zarr`` folder or a TIFF file for reading region by region.

    Raises
    ------
    InputError
        A path that is neither, a zarr group with no image in it, or a file that cannot be opened.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder.")
    if is_zarr_path(p):
        return _open_zarr(p)
    if p.suffix.lower() in (".tif", ".tiff"):
        return _open_tiff(p)
    raise InputError(f"{p}: only .zarr folders and TIFF files are read region by region.")


def _open_zarr(p: Path) -> LazyImage:
    import zarr

    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(f"{p}: not a zarr store ({_first_line(exc)}).") from exc
    if isinstance(node, zarr.Array):
        return LazyImage(node, source=str(p))
    meta = _multiscales(node)
    if meta is None and "0" in node and isinstance(node["0"], zarr.Group):
        inner = node["0"]  # bioformats2raw: the first image is the group "0"
        if (meta := _multiscales(inner)) is not None:
            node = inner
    if meta is None:
        arrays = sorted(k for k, v in node.members() if isinstance(v, zarr.Array))
        if len(arrays) == 1:
            return LazyImage(node[arrays[0]], source=f"{p}/{arrays[0]}")
        what = f"arrays {', '.join(arrays)}" if arrays else "no array"
        raise InputError(f"{p}: a zarr group with {what} and no OME-Zarr 'multiscales' metadata; "
                         "give the path of one array.")
    datasets = meta.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise InputError(f"{p}: its OME-Zarr metadata lists no dataset.")
    level = datasets[0]["path"]
    try:
        array = node[level]
    except KeyError:
        raise InputError(f"{p}: its OME-Zarr metadata names the level '{level}', which is missing.") from None
    axes, units = _ome_axes(meta.get("axes"), len(array.shape))
    scale = _ome_scale(meta, datasets[0], len(array.shape))
    return LazyImage(array, axes=axes, scale=scale, units=units, source=str(p))


def _multiscales(group: Any) -> dict | None:
    attrs = dict(group.attrs)
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    return ms[0] if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None


def _ome_axes(axes: Any, ndim: int) -> tuple[str | None, tuple[str | None, ...] | None]:
    if not isinstance(axes, list) or len(axes) != ndim:
        return None, None
    letters, units = [], []
    for a in axes:
        name = a.get("name", "") if isinstance(a, dict) else str(a)
        letters.append(_OME_LETTERS.get(str(name).lower(), "Q"))
        units.append(a.get("unit") if isinstance(a, dict) else None)
    return "".join(letters), tuple(units)


def _ome_scale(meta: dict, dataset: dict, ndim: int) -> tuple[float, ...] | None:
    scale = np.ones(ndim)
    found = False
    for transforms in (dataset.get("coordinateTransformations"), meta.get("coordinateTransformations")):
        for t in transforms or []:
            if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
                scale *= np.asarray(t["scale"], dtype=float)
                found = True
    return tuple(float(v) for v in scale) if found else None


def _open_tiff(p: Path) -> LazyImage:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(str(p))
    except Exception as exc:
        raise InputError(f"{p}: not a readable TIFF file ({_first_line(exc)}).") from exc
    try:
        if not tif.series:
            raise InputError(f"{p}: the TIFF file holds no image.")
        series = tif.series[0]
        store = series.aszarr(level=0)
        array = zarr.open(store, mode="r")
        if isinstance(array, zarr.Group):  # a pyramidal TIFF: its level 0
            array = array["0"]
        axes = str(series.axes).upper() if series.axes else None
        scale = _tiff_scale(series, axes)
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(f"{p}: cannot read this TIFF file region by region ({_first_line(exc)}).") from exc
    return LazyImage(array, axes=axes, scale=scale, source=str(p), _closers=[store, tif])


def _tiff_scale(series: Any, axes: str | None) -> tuple[float, ...] | None:
    """Pixel size along each axis from the resolution tags (1 where unknown), or None."""
    if not axes:
        return None
    try:
        page = series.pages[0]
        tags = page.tags
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        if xres is None or yres is None:
            return None
        x = xres.value[1] / xres.value[0] if xres.value[0] else 0.0
        y = yres.value[1] / yres.value[0] if yres.value[0] else 0.0
    except Exception:  # unusual tags: no scale rather than a wrong one
        return None
    if not (x > 0 and y > 0) or (x == 1 and y == 1):
        return None
    return tuple(y if a == "Y" else x if a == "X" else 1.0 for a in axes)
