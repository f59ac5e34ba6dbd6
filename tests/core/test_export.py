"""Export of a bundle as ONNX, TorchScript and torch.export files: parity with the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import run_to_end
from napari_segloop.core.export import export_model
from napari_segloop.core.export.metadata import Author, Citation, ExportMeta
from napari_segloop.core.export.onnx_weights import OnnxNetwork, export_onnx
from napari_segloop.core.export.shapes import min_side
from napari_segloop.core.export.torch_weights import (
    export_program,
    export_torchscript,
    load_program,
    load_torchscript,
)
from napari_segloop.core.models.registry import create_model, probabilities, trainable_reason
from tests.core.tiny_models import tiny_bundle


def _small(multiple: int) -> list[tuple[int, ...]]:
    s = min_side(multiple)
    return [(1, 1, s, s), (3, 1, s + multiple, 2 * s + 3 * multiple)]


@pytest.fixture(scope="module")
def tiny():
    return tiny_bundle(depth=3, tile_size=64)


def _gap(reference, runner, shape) -> float:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((probabilities(reference(x)) - probabilities(runner(x))).abs().max())


@pytest.fixture(scope="module")
def onnx_file(tiny, tmp_path_factory):
    """The tiny model exported once (the exporter takes seconds even for tiny networks)."""
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    inplace = [m for m in tiny.model.modules() if getattr(m, "inplace", None) is True]
    assert inplace, "the tiny network has in-place activations (the exporter's copy turns them off)"
    tiny.model.train()
    path = export_onnx(tiny.model, tmp_path_factory.mktemp("onnx") / "m.onnx", 1, tiny.input_multiple)
    assert tiny.model.training, "the user's model was switched to eval mode"
    assert all(m.inplace for m in inplace), "the user's activations were changed"
    tiny.model.eval()
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    return path


def test_onnx_matches_torch_at_free_batch_height_and_width(tiny, onnx_file):
    path = onnx_file
    runner = OnnxNetwork(path, tiny.config, tiny.input_multiple)
    for shape in _small(tiny.input_multiple):
        assert _gap(tiny.model, runner, shape) < 1e-4
    assert not path.with_suffix(".onnx.data").exists(), "the weights must be inside the one file"
    again = OnnxNetwork(path.read_bytes(), tiny.config, tiny.input_multiple)  # from bytes (packages)
    assert _gap(tiny.model, again, _small(tiny.input_multiple)[0]) < 1e-4


@pytest.mark.parametrize("architecture,encoder,kwargs", [
    ("UNet3Plus", "plain", {"base_channels": 4}),  # ClassicUNet: tests/core/test_bioimageio.py
])
def test_torchscript_and_torch_export_match_own_architectures(architecture, encoder, kwargs, tmp_path):
    torch.manual_seed(0)
    bundle = create_model(architecture, encoder, 1, 3, **kwargs)
    m = bundle.input_multiple
    script = load_torchscript(export_torchscript(bundle.model, tmp_path / "m.pt", 1, m), allow_code=True)
    program = load_program(export_program(bundle.model, tmp_path / "m.pt2", 1, m))
    for shape in _small(m):
        assert _gap(bundle.model, script, shape) < 1e-4
        assert _gap(bundle.model, program, shape) < 1e-4


def test_torchscript_is_refused_unless_allowed(tiny, tmp_path):
    path = export_torchscript(tiny.model, tmp_path / "m.pt", 1, tiny.input_multiple)
    with pytest.raises(ModelLoadError, match="only when you allow it"):
        load_torchscript(path)


# ONNX through export_model: tests/test_cli_export.py (each ONNX export takes seconds).
@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("torch-export", ".pt2")])
def test_export_model_writes_checked_files(tiny, tmp_path, fmt, suffix):
    out = tmp_path / f"m{suffix}"
    result = run_to_end(export_model(tiny, fmt, out))
    assert out.is_file() and result.path == out
    assert 0 <= result.parity[fmt] < 1e-4
    assert any("logits" in n for n in result.notes)
    with pytest.raises(ModelLoadError, match="already exists"):
        run_to_end(export_model(tiny, fmt, out))
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no temporary file is left"


def test_export_model_refuses_wrong_suffix_and_format(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match=r"\.onnx file"):
        run_to_end(export_model(tiny, "onnx", tmp_path / "m.zip"))
    with pytest.raises(ModelLoadError, match="Unknown export format"):
        run_to_end(export_model(tiny, "keras", tmp_path / "m.h5"))


def test_an_export_that_differs_from_the_model_is_not_written(tiny, tmp_path, monkeypatch):
    from napari_segloop.core.export import torch_weights

    other = tiny_bundle(depth=3, seed=7).model
    real = torch_weights.export_torchscript
    monkeypatch.setattr(torch_weights, "export_torchscript",
                        lambda model, path, c, m: real(other, path, c, m))
    out = tmp_path / "m.pt"
    with pytest.raises(ModelLoadError, match="differs from the PyTorch model"):
        run_to_end(export_model(tiny, "torchscript", out))
    assert not out.exists()


def test_onnx_and_torchscript_models_cannot_be_fine_tuned(tiny, onnx_file, tmp_path):
    path = onnx_file
    assert "not fine-tune" in trainable_reason(OnnxNetwork(path, tiny.config, tiny.input_multiple))
    script = load_torchscript(export_torchscript(tiny.model, tmp_path / "m.pt", 1, tiny.input_multiple),
                              allow_code=True)
    assert "TorchScript" in trainable_reason(script)
    assert trainable_reason(tiny.model) == ""


def test_metadata_parsing():
    a = Author.parse("Ada Lovelace; Analytical Engines Ltd; 0000-0002-1825-0097")
    assert (a.name, a.affiliation) == ("Ada Lovelace", "Analytical Engines Ltd")
    assert a.orcid == "0000-0002-1825-0097"
    assert Author.parse("Bob").affiliation is None
    with pytest.raises(ValueError, match="ORCID"):
        Author.parse("Bob; lab; 1234")
    with pytest.raises(ValueError, match="name"):
        Author.parse(" ; lab")
    c = Citation.parse("Our paper; 10.1000/xyz")
    assert c.doi == "10.1000/xyz" and c.url is None
    with pytest.raises(ValueError, match="DOI"):
        Citation.parse("Our paper; somewhere")
    meta = ExportMeta()
    assert meta.placeholders() == ["authors", "description"]
    assert meta.name_problem() is None
    from napari_segloop.core.export.metadata import default_name

    assert ExportMeta(name=default_name("/data/models/nuclei.v2")).name_problem() is None
    assert default_name("/data/tiny") == "tiny model"
    assert "may only contain" in ExportMeta(name="Nuclei, DAPI").name_problem()
    cites = meta.all_citations("Unet")
    assert cites[-1].doi == "10.1007/978-3-319-24574-4_28"
    assert np.all([isinstance(x, Citation) for x in cites])


def test_onnx_engine_is_exported_once_and_checked(tiny, tmp_path, monkeypatch):
    from napari_segloop.core.export import engine
    from napari_segloop.core.inference.predict import predict_array

    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "cache"))
    fast = run_to_end(engine.with_onnx_engine(tiny))
    assert isinstance(fast.model, OnnxNetwork) and fast.settings is tiny.settings
    image = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    ref = predict_array(tiny, image, device="cpu")
    assert np.abs(predict_array(fast, image, device="cpu") - ref).max() < 1e-4
    (cached,) = (tmp_path / "cache").iterdir()
    monkeypatch.setattr(engine, "export_onnx", lambda *a, **k: pytest.fail("exported twice"))
    events = []
    run_to_end(engine.with_onnx_engine(tiny), events.append)
    assert events == [], "a cached graph is used without a notice"
    assert run_to_end(engine.with_onnx_engine(fast)) is fast
    # A cached graph of another network (a stale or tampered file) is refused and removed.
    other = tiny_bundle(depth=3, seed=9)
    monkeypatch.setattr(engine, "fingerprint", lambda b: cached.stem)
    with pytest.raises(ModelLoadError, match="differs from the model"):
        run_to_end(engine.with_onnx_engine(other))
    assert not cached.exists()
