"""The CPU thread policy: auto leaves a core free; explicit numbers are honoured; bad ones refused."""

from __future__ import annotations

import pytest
import torch

from napari_segloop.core.inference import threads


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 3), (16, 8)])
def test_auto_leaves_one_core_and_caps(monkeypatch, cores, expected):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    assert threads.resolve_threads("auto") == expected
    assert threads.resolve_threads(None) == expected


def test_explicit_numbers_and_bad_values():
    assert threads.resolve_threads(3) == 3
    assert threads.resolve_threads("2") == 2
    for bad in (0, -1, "many", True):
        with pytest.raises(ValueError):
            threads.resolve_threads(bad)


def test_apply_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option_is_applied(monkeypatch, tmp_path):
    import numpy as np
    import tifffile

    from napari_segloop.cli import EXIT_OK, main

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((40, 40), dtype=np.uint8))
    assert main(["predict", str(path), "-o", str(tmp_path / "p.tif"), "--threads", "7", "-q"]) == EXIT_OK
    assert seen == [7]
    with pytest.raises(SystemExit) as info:  # argparse: a usage error, exit 2
        main(["predict", str(path), "-o", str(tmp_path / "p.tif"), "--threads", "0"])
    assert info.value.code == 2
