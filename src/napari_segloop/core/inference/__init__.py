"""From an image to a probability map: devices, normalisation, tiling and the prediction generator.

* :mod:`.devices` auto CUDA -> MPS -> CPU with a real probe, AMP policy;
* :mod:`.normalize` channel layout and conversions, percentile normalisation;
* :mod:`.tiling` tile grids and separable blending windows;
* :mod:`.predict` :func:`~.predict.predict`, a generator yielding progress.

Nothing is re-exported here, so that importing a light module (``tiling``)
does not import torch.
"""
