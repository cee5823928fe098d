"""Prompt files (UTF-8 text, one prompt per line, blank lines and `#` comments ignored) and safe file I/O."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from clear_sae.errors import ClearSaeError


def read_prompt_file(path: str | Path) -> list[str]:
    """Read the prompts in `path`, raising a one-line error if it is missing, unreadable or empty."""
    path = Path(path)
    if path.is_dir():
        raise ClearSaeError(f"prompt file {path} is a directory; pass a UTF-8 text file with one prompt per line")
    if not path.is_file():
        raise ClearSaeError(f"prompt file {path} does not exist; pass a UTF-8 text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first prompt
    except UnicodeDecodeError as err:
        raise ClearSaeError(f"prompt file {path} is not UTF-8 text ({err.reason}); re-save it as UTF-8") from None
    # Only newlines separate prompts (str.splitlines would also split on form feeds and the like).
    lines = text.replace("\r\n", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if "\x00" in line:  # HDF5 strings end at a NUL; such a file is binary, not prompts
            raise ClearSaeError(f"prompt file {path} line {number} holds a NUL byte; prompts must be plain text")
    prompts = [line.strip() for line in lines]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ClearSaeError(f"prompt file {path} holds no prompts; write one prompt per line (# starts a comment)")
    return prompts


def prompts_hash(prompts: list[str]) -> str:
    """A short, stable hash of a prompt list (order matters), recorded in caches and libraries."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def words_of(prompt: str) -> set[str]:
    """The lower-case words of a prompt (letters, with inner apostrophes or hyphens)."""
    return set(re.findall(r"[a-z]+(?:['-][a-z]+)*", prompt.lower()))


def corpus_vocabulary(prompts: list[str]) -> dict[str, int]:
    """For each word of a corpus, the number of its prompts that contain it (sorted by word)."""
    counts: Counter[str] = Counter()
    for prompt in prompts:
        counts.update(words_of(prompt))
    return dict(sorted(counts.items()))


def atomic_save_tensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write `tensors` (torch tensors) and `metadata` as a safetensors file at `path` through a temporary file,
    synced to disk before it replaces the old one, so a kill at any moment leaves the old file or the new one."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    try:
        save_file(contiguous, str(partial), metadata=metadata)
        os.chmod(partial, 0o666 & ~_umask())  # as any file this process creates, not safetensors' 0600
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file of its own (so a crash never leaves half a file behind,
    and two writers never share one); a symbolic link is followed, so the file it points to is replaced."""
    path = Path(os.path.realpath(path))
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # nothing to replace (creating the folder raises OSError)
        found = None
    except OSError as err:
        raise ClearSaeError(f"cannot write {path} ({err.strerror}); pass another path") from None
    if found is not None and not stat.S_ISREG(found.st_mode):  # never replace a device (/dev/null), pipe or folder
        raise ClearSaeError(f"{path} is not a regular file; pass a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())  # not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def lock_path(path: str | Path) -> Path:
    """The lock file of `path`: `<path>.lock` beside it (links followed)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


@contextmanager
def file_lock(path: str | Path, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock for `path` (on `lock_path(path)`, which stays). A second process asking for
    it waits until the first is done; with `busy`, it does not wait but gets that one-line error."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise ClearSaeError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(path: str | Path) -> bool:
    """Whether another holder has `path`'s lock (`file_lock`) right now."""
    lock = lock_path(path)
    if not lock.is_file():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def without_option(argv: list[str], option: str) -> list[str]:
    """Command-line arguments less `option` and its value (`--work FOLDER` or `--work=FOLDER`): for recording a
    command without a setting that changes no figure, such as a cache folder."""
    out, skip = [], False
    for arg in argv:
        if skip or arg == option:
            skip = not skip
            continue
        out.append(arg)
    return [a for a in out if not a.startswith(f"{option}=")]


def run_to_resume(path: str | Path, fresh: dict[str, Any], what: str, unset: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON run at `path` that `fresh` continues (`--resume`), refused unless its format, command, protocol and
    config match, config keys in `unset` (set only as the run goes) aside; {} when there is no file yet."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        earlier = json.loads(path.read_text())
        config = {k: v for k, v in earlier["config"].items() if k not in unset}
        same = config == fresh["config"] and all(earlier[k] == fresh[k] for k in ("format", "command", "protocol"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same = False
    if not same:
        raise ClearSaeError(
            f"--resume: {path} is not a {what} run with these settings, protocol and weights; pass another --out, "
            "or leave out --resume to start again"
        )
    return earlier


def relative_to_folder(path: str | Path, folder: Path) -> str:
    """`path` relative to `folder` when it lies inside it (so that reports compare across checkouts), else as
    given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(folder.resolve())) if resolved.is_relative_to(folder.resolve()) else str(path)


def read_json_file(path: str | Path, what: str, fix: str) -> Any:
    """Parse a JSON file, or raise a one-line error naming `what` it should be and how to `fix` it."""

    path = Path(path)
    if not path.is_file():
        raise ClearSaeError(f"{what} {path} does not exist{' or is a directory' if path.exists() else ''}; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClearSaeError(f"{path} is not a valid {what} ({err}); {fix}") from None


def output_file(path: str | Path, what: str) -> Path:
    """A path to write a file to, checked up front, before any work is done: an existing directory, device, pipe
    or link loop is refused, and so is a place this process cannot write in (a parent that is a file, a read-only
    folder, /proc)."""
    path = Path(path)
    try:
        found = os.stat(path)  # follows a link: what a write would replace
    except FileNotFoundError:
        found = None
    except NotADirectoryError:
        found = None  # a parent is a file: said below, by name
    except OSError as err:  # a link loop, a name too long, a folder it may not look in
        raise ClearSaeError(f"{what} {path} cannot be written ({err.strerror}); pass another path") from None
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise ClearSaeError(f"{what} {path} is a directory; pass a file path")
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise ClearSaeError(f"{what} {path} is not a regular file (a device, pipe or socket); pass a file path")
    check_can_create_in(Path(os.path.realpath(path)).parent, what, path)
    return path


def output_folder(path: str | Path, what: str) -> Path:
    """A folder to write into, checked up front like `output_file`: an existing file is refused, and so is a place
    this process cannot write in."""
    path = Path(path)
    if path.is_symlink() and not path.exists():  # a loop, or a link to nothing: no folder can be made there
        raise ClearSaeError(f"{what} {path} is a link that leads to no folder; remove it or pass another path")
    if path.exists() and not path.is_dir():
        raise ClearSaeError(f"{what} {path} is a file; pass a folder")
    check_can_create_in(Path(os.path.realpath(path)), what, path)
    return path


def check_can_create_in(folder: Path, what: str, path: Path) -> None:
    """Raise a one-line error unless a file can be created in `folder` or, where it does not exist yet, in its
    nearest existing parent (which must be a folder): found by creating and removing an empty file, the one test
    that also holds for root and for /proc."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ClearSaeError(f"{what} {path} cannot be written: {existing} is a file, not a folder; pass another path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".clear_sae-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ClearSaeError(
            f"{what} {path} cannot be written: {existing} is not writable ({err.strerror}); pass another path"
        ) from None


def check_not_an_input(out: Path, inputs: dict[str, Any]) -> None:
    """Refuse an output path that is one of the command's own input files (named by option), even when forced."""
    for option, path in inputs.items():
        if path is not None and Path(path).exists() and Path(path).resolve() == out.resolve():
            raise ClearSaeError(f"--out {out} is this command's {option} file; pick another --out")


def report_tag(fmt: str) -> str:
    """The tag in the head of an HTML report of format `fmt`, which marks the page as clear_sae's own."""
    return f'<meta name="generator" content="{fmt}">'


def is_earlier_output(path: Path, fmt: str) -> bool:
    """Whether the file at `path` is a report of format `fmt` that clear_sae wrote: a JSON object whose `format`
    is `fmt`, or an HTML page whose head carries `report_tag(fmt)` (not merely a file that mentions `fmt`)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
        if head[:1] == b"{":
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("format") == fmt
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                return False
        page = head.decode("utf-8", errors="replace")
        if not page.lstrip().lower().startswith("<!doctype html>"):
            return False
        return report_tag(fmt) in page.split("</head>", 1)[0]
    except OSError:
        return False


def check_overwrite(out: Path, fmt: str, force: bool, what: str | None = None) -> None:
    """Refuse to overwrite anything but an earlier report of format `fmt` (a cache, say) unless `force`; `what`
    names such a report in the message (default: from the format, "an erase report")."""
    if not out.exists() or force or is_earlier_output(out, fmt):
        return
    if what is None:
        kind = fmt.removeprefix("clear_sae.").replace("_", " ")
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    raise ClearSaeError(f"{out} exists and is not {what}; choose another --out or pass --force")
