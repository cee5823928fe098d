"""Safe file writes: a temporary file of its own per write, links followed, modes kept, nothing half-written."""

from __future__ import annotations

import os

import pytest

from clear_sae.io import atomic_write_text


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_link_stays_a_link_and_its_target_is_written(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_the_mode_of_an_existing_file_is_kept_and_a_new_file_follows_the_umask(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.stat().st_mode & 0o777 == 0o640
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "fresh.json", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "fresh.json").stat().st_mode & 0o777 == 0o644  # not the private 0600 of a temp file


def test_a_failed_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("kept")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "a lone surrogate \udc80 cannot be encoded")
    assert path.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
