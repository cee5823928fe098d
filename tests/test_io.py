"""Safe file writes: a temporary file of its own per write, links followed, modes kept, nothing half-written."""

from __future__ import annotations

import json
import os

import pytest

from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, run_to_resume, without_option


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


@pytest.mark.parametrize("kind", ["pipe", "loop", "folder"])
def test_a_write_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    """`/dev/null` given as an output was once replaced by a regular file: devices, pipes, folders and link loops
    are refused, by the up-front check and by the write itself."""
    from clear_sae.errors import ClearSaeError
    from clear_sae.io import output_file

    path = tmp_path / "out.json"
    if kind == "pipe":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    else:
        path.mkdir()
    with pytest.raises(ClearSaeError, match="not a regular file|cannot be written|is a directory"):
        output_file(path, "--out")
    with pytest.raises(ClearSaeError, match="not a regular file|cannot write"):
        atomic_write_text(path, "{}")
    assert path.is_symlink() if kind == "loop" else (path.is_fifo() if kind == "pipe" else path.is_dir())
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left either


def test_a_prompt_file_with_a_nul_byte_is_refused_by_line(tmp_path):
    from clear_sae.errors import ClearSaeError
    from clear_sae.io import read_prompt_file

    path = tmp_path / "p.txt"
    path.write_bytes(b"# prompts\na dog\na c\x00t\n")
    with pytest.raises(ClearSaeError, match=r"line 3 holds a NUL byte"):
        read_prompt_file(path)


@pytest.mark.parametrize("kind", ["file", "loop", "dangling", "under-a-file"])
def test_an_output_folder_that_cannot_be_made_is_refused_up_front(tmp_path, kind):
    from clear_sae.errors import ClearSaeError
    from clear_sae.io import output_folder

    path = tmp_path / "out"
    if kind == "file":
        path.write_text("keep")
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "missing")
    else:
        (tmp_path / "f").write_text("keep")
        path = tmp_path / "f" / "out"
    with pytest.raises(ClearSaeError, match="is a file|leads to no folder|is a file, not a folder"):
        output_folder(path, "--out")
    assert output_folder(tmp_path / "new" / "dicts", "--out") == tmp_path / "new" / "dicts"
    assert not (tmp_path / "new").exists()  # checked, not created


def test_a_recorded_command_leaves_out_an_option_and_its_value_in_either_spelling():
    argv = ["--work", "/somewhere", "--budget", "2", "--work=/else", "--workers", "3"]
    assert without_option(argv, "--work") == ["--budget", "2", "--workers", "3"]
    assert without_option(["--budget", "2"], "--work") == ["--budget", "2"]


def test_a_run_is_resumed_only_with_the_same_settings_and_a_key_set_later_is_not_compared(tmp_path):
    fresh = {"format": "f", "command": ["x"], "protocol": {"seed": 1}, "config": {"clips": 3}}
    assert run_to_resume(tmp_path / "none.json", fresh, "Test") == {}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(fresh | {"config": {"clips": 3, "strength": 4}, "concepts": {"red": 1}}))
    assert run_to_resume(path, fresh, "Test", unset=("strength",))["concepts"] == {"red": 1}
    with pytest.raises(ClearSaeError, match="not a Test run with these settings"):
        run_to_resume(path, fresh, "Test")
    with pytest.raises(ClearSaeError, match="not a Test run"):
        run_to_resume(path, fresh | {"protocol": {"seed": 2}}, "Test", unset=("strength",))
