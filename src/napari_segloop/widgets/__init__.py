"""The napari layer of the plugin: thin docks that read layers, start workers, apply results.

Nothing here computes: every long operation is a generator from
:mod:`napari_segloop.core` run in a napari ``thread_worker``.
"""
