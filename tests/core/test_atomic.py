"""Atomic writes: a failed write leaves the previous file intact and no temporary file; a full disk
says so; temporaries left by killed writers are removed on the next write of the same output."""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import report
from napari_segloop.core.evaluation.report import write_metrics_csv
from napari_segloop.core.io import atomic, images
from napari_segloop.core.io.atomic import (
    STALE_AFTER_S,
    atomic_path,
    pid_alive,
    remove_stale_temps,
    temp_folder_paths,
)
from napari_segloop.core.io.images import read_image, write_image


def test_success_replaces_the_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_failure_keeps_the_previous_file_and_cleans_up(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# ---------------------------------------------------------------- a full disk


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_says_disk_full_and_keeps_the_previous_file(tmp_path, code):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(code, os.strerror(code))
    assert info.value.errno == code
    assert info.value.strerror == f"disk full: {os.strerror(code)}"
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_full_disk_at_the_rename_says_disk_full(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old")

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match=r"disk full: No space left on device"), atomic_path(target) as tmp:
        tmp.write_text("new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_other_errors_are_unchanged(tmp_path):
    error = OSError(errno.EACCES, "Permission denied")
    with pytest.raises(OSError) as info, atomic_path(tmp_path / "out.csv"):
        raise error
    assert info.value is error


def test_write_image_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    write_image(path, np.full((4, 4), 3, np.uint8))

    def full(tmp, *args):
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(images, "_write", full)
    with pytest.raises(InputError) as info:
        write_image(path, np.zeros((8, 8), np.uint8))
    assert str(info.value) == f"{path}: cannot write (disk full: {os.strerror(errno.ENOSPC)})."
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path), np.full((4, 4), 3, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_write_metrics_csv_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "m.csv"
    write_metrics_csv(path, [{"name": "old"}])
    before = path.read_text()

    class FullFile(io.StringIO):
        def __init__(self, name):
            super().__init__()
            Path(name).write_text("partial")

        def write(self, text):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(report, "open", lambda name, *a, **k: FullFile(name), raising=False)
    with pytest.raises(InputError, match=r"cannot write \(disk full: "):
        write_metrics_csv(path, [{"name": "new"}])
    monkeypatch.undo()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


# ---------------------------------------------------------------- stale temporaries of killed writers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)


def test_temp_names_carry_the_pid(tmp_path):
    target = tmp_path / "out.csv"
    with atomic_path(target) as tmp:
        assert re.fullmatch(rf"\.out\.csv\.{os.getpid()}-[0-9a-f]{{8}}\.tmp", tmp.name)
        tmp.write_text("x")


def test_stale_temps_of_this_output_go_foreign_files_stay(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    dead = _dead_pid()
    stale_dead = tmp_path / f".out.csv.{dead}-0123abcd.tmp"  # writer killed: its pid is gone
    stale_old = tmp_path / ".out.csv.89abcdef.tmp"  # the naming before pids, an hour old
    live_fresh = tmp_path / f".out.csv.{os.getppid()}-00000000.tmp"  # a writer still running
    keep = {
        live_fresh: "",
        tmp_path / f".other.csv.{dead}-0123abcd.tmp": "another output's temporary",
        tmp_path / ".out.csv.notes": "the user's notes",
        tmp_path / ".out.csv.tmp": "not our naming",
        tmp_path / f"out.csv.{dead}-0123abcd.tmp": "not hidden: not ours",
        tmp_path / f".out.csv.{dead}-0123ABCD.tmp": "upper-case hex: not ours",
        tmp_path / f".xout.csv.{dead}-0123abcd.tmp": "another name",
    }
    for path in (stale_dead, stale_old, *keep):
        path.write_text("x")
    _age(stale_old)
    for path in keep:
        if path != live_fresh:
            _age(path)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert not stale_dead.exists() and not stale_old.exists()
    assert all(path.exists() for path in keep), [p.name for p in keep if not p.exists()]


def test_a_live_writers_temp_becomes_stale_after_the_grace_period(tmp_path):
    target = tmp_path / "out.csv"
    live = tmp_path / f".out.csv.{os.getppid()}-00000000.tmp"
    live.write_text("x")
    assert remove_stale_temps(target) == []
    _age(live, STALE_AFTER_S + 60)
    assert remove_stale_temps(target) == [live]
    assert not live.exists()


def test_symlinks_and_folders_with_a_temp_file_name_are_kept(tmp_path):
    target = tmp_path / "out.csv"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / f".out.csv.{_dead_pid()}-0123abcd.tmp"
    link.symlink_to(victim)
    folder = tmp_path / ".out.csv.0123abcd.tmp"
    folder.mkdir()
    _age(folder)
    assert remove_stale_temps(target) == []
    assert link.is_symlink() and victim.read_text() == "precious" and folder.is_dir()


def test_a_very_long_name_writes_and_cleans_up(tmp_path):
    target = tmp_path / ("n" * 240 + ".csv")
    with atomic_path(target) as tmp:
        tmp.write_text("x")
        assert len(tmp.name) < 255
        stale = tmp.with_name(re.sub(r"\.\d+-", f".{_dead_pid()}-", tmp.name))
        stale.write_text("left by a killed run")
    assert target.read_text() == "x"
    with atomic_path(target) as tmp:
        tmp.write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_killed_writer_leaves_a_temp_that_the_next_write_removes(tmp_path):
    """A real SIGKILL in the middle of a write: no ``finally`` runs."""
    target = tmp_path / "out.csv"
    target.write_text("old")
    code = (
        "import sys, time\n"
        "from napari_segloop.core.io.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        left = Path(proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert left.exists() and left.parent == tmp_path, "the kill left the temporary behind"
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# ---------------------------------------------------------------- bundle folders (folders=True)


def _bundle_temps(tmp_path: Path, name: str, dead: int) -> dict[str, Path]:
    paths = {
        "tmp_dead": tmp_path / f".{name}.tmp-{dead}-0123abcd",
        "old_dead": tmp_path / f".{name}.old-{dead}-4567abcd",
        "tmp_aged": tmp_path / f".{name}.tmp-89abcdef",  # today's naming without a pid
        "old_aged": tmp_path / f".{name}.old-fedcba98",
        "tmp_live": tmp_path / f".{name}.tmp-{os.getppid()}-00000000",
    }
    for path in paths.values():
        path.mkdir()
        (path / "weights.safetensors").write_bytes(b"w")
    for key in ("tmp_aged", "old_aged"):
        _age(paths[key] / "weights.safetensors")
        _age(paths[key])
    return paths


def test_stale_bundle_folders_are_removed_when_the_bundle_exists(tmp_path):
    bundle = tmp_path / "model"
    bundle.mkdir()
    paths = _bundle_temps(tmp_path, "model", _dead_pid())
    notes = tmp_path / ".model.notes"
    notes.mkdir()
    _age(notes)
    lookalike = tmp_path / ".model.tmp-0123abcd"  # a file, not a folder
    lookalike.write_text("x")
    _age(lookalike)
    removed = remove_stale_temps(bundle, folders=True)
    assert sorted(removed) == sorted(paths[k] for k in ("tmp_dead", "old_dead", "tmp_aged", "old_aged"))
    assert paths["tmp_live"].is_dir() and notes.is_dir() and lookalike.is_file() and bundle.is_dir()
    # the file rule never touches folders, and the other way round
    assert remove_stale_temps(bundle) == []


def test_old_bundle_folders_are_kept_when_the_bundle_is_missing(tmp_path):
    """Killed between the two renames of a swap, the ``.old-`` folder is the only copy."""
    paths = _bundle_temps(tmp_path, "model", _dead_pid())
    removed = remove_stale_temps(tmp_path / "model", folders=True)
    assert sorted(removed) == sorted(paths[k] for k in ("tmp_dead", "tmp_aged"))
    assert paths["old_dead"].is_dir() and paths["old_aged"].is_dir()


def test_a_bundle_folder_still_being_written_is_not_aged(tmp_path):
    (tmp_path / "model").mkdir()
    busy = tmp_path / ".model.tmp-0123abcd"
    busy.mkdir()
    (busy / "weights.safetensors").write_bytes(b"being written")  # fresh
    _age(busy)  # the folder itself looks old
    assert remove_stale_temps(tmp_path / "model", folders=True) == []


def test_temp_folder_paths_are_recognised(tmp_path):
    bundle = tmp_path / "model"
    tmp, old = temp_folder_paths(bundle)
    assert re.fullmatch(rf"\.model\.tmp-{os.getpid()}-[0-9a-f]{{8}}", tmp.name)
    assert re.fullmatch(rf"\.model\.old-{os.getpid()}-[0-9a-f]{{8}}", old.name)
    tmp.mkdir()
    assert remove_stale_temps(bundle, folders=True) == []  # this process is alive
    assert remove_stale_temps(bundle, folders=True, older_than=-1) == [tmp]


def test_pid_alive():
    assert pid_alive(os.getpid()) and pid_alive(os.getppid())
    assert pid_alive(0) and pid_alive(-1), "unknown pids count as alive (the age rule decides)"
    assert not pid_alive(_dead_pid()) or os.name == "nt"
