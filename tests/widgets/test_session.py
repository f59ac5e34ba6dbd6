"""Per-viewer sessions: shared by the docks of one viewer, never between viewers."""

from __future__ import annotations

import gc
import weakref

from napari_segloop.widgets import session as session_module
from napari_segloop.widgets.session import session_for


class _FakeViewer:
    """Anything hashable and weak-referenceable can key a session."""


def test_one_session_per_viewer(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy  # what napari hands to plugin widgets

    a = make_napari_viewer()
    b = make_napari_viewer()
    assert session_for(a) is session_for(PublicOnlyProxy(a))
    assert session_for(a) is not session_for(b)
    assert session_for(a).viewer is a


def test_docks_share_the_session(docks, tiny_bundle):
    viewer, model_dock, predict_dock = docks()
    assert model_dock.session is predict_dock.session is session_for(viewer)
    seen = []
    model_dock.session.model_changed.connect(seen.append)
    model_dock.session.set_model(tiny_bundle)
    assert seen == [tiny_bundle]
    assert model_dock.session.model_version == 1


def test_registry_is_weak():
    viewer = _FakeViewer()
    session = session_for(viewer)
    assert session_module._SESSIONS.get(viewer) is session
    viewer_ref, session_ref = weakref.ref(viewer), weakref.ref(session)
    del viewer, session
    gc.collect()
    assert viewer_ref() is None and session_ref() is None  # the registry kept neither alive


def test_device_choice_is_shared(docks):
    _viewer, model_dock, predict_dock = docks()
    predict_dock.device_combo.setCurrentText("cpu")
    assert model_dock.session.device == "cpu"
    assert "cpu" in model_dock.device_label.text()
