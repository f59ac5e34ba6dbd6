"""napari-segloop: deep-learning segmentation with a human in the loop.

The public, Qt-free API lives in :mod:`napari_segloop.core`; importing this
package does not import napari, Qt or torch, so that napari starts fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
