"""Fault injection: `cache`, `train`, `concept` and library saves killed with SIGKILL at seeded random points of their
file operations, each followed by the matching resume or rerun. After every kill, what is on disk either refuses to
load or loads as what an uninterrupted run wrote; after the rerun, nothing is lost.

The children are forked by `tests/fault_server.py` and kill themselves at the n-th of their file operations
(writes, renames, locks, HDF5 resizes and attribute writes, training steps), n drawn from a seeded generator between
1 and the number an uninterrupted run makes: a kill point is a place in the work, not a moment, so the same seed
kills at the same places on any machine. The default run kills at least 22 times; `--runslow` five times as often.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clear_sae.cache import ActivationCache
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.library import ConceptLibrary

HERE = Path(__file__).resolve().parent


class FaultServer:
    """The worker process and its request protocol."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "fault_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def run(self, op: str, die_at: int = 0, **args: Any) -> dict[str, Any]:
        """Run `op` in a forked child that kills itself at its `die_at`-th file operation (0: never)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        log = self.logs / f"{self.count:03d}_{op}.log"
        request = {"op": op, "args": {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}}
        self.process.stdin.write(json.dumps({**request, "die_at": die_at, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        assert reply["killed"] or reply["code"] == 0, f"{op} failed without being killed:\n{log.read_text()}"
        return reply

    def close(self) -> None:
        """End the worker."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    worker = FaultServer(tmp_path_factory.mktemp("fault_logs"))
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def kills(request) -> int:
    """Kills per operation: 5 or 6 in the default run (22 in all), five times as many under --runslow."""
    return 5 if request.config.getoption("--runslow") else 1


def kill_loop(
    server: FaultServer,
    op: str,
    rng: random.Random,
    n_kills: int,
    calls: int,
    reset,
    check_killed,
    check_done,
    **args: Any,
) -> int:
    """Run `op` again and again, each time killed at a random one of its `calls` file operations, checking the state
    after each kill (`check_killed`) and, whenever a run finishes, its result (`check_done`) before starting afresh
    (`reset`); stops after `n_kills` kills, with a last run to the end. Returns the number of kills."""
    killed = 0
    while killed < n_kills:
        reply = server.run(op, die_at=rng.randint(1, calls), **args)
        if reply["killed"]:
            killed += 1
            check_killed()
        else:
            check_done()
            reset()
    assert not server.run(op, **args)["killed"]
    check_done()
    return killed


def test_caching_killed_anywhere_refuses_to_load_as_finished_and_resumes_to_the_uninterrupted_rows(
    server, tmp_path, kills
):
    reference = tmp_path / "reference.h5"
    calls = server.run("cache", path=reference)["calls"]
    with ActivationCache(reference) as done:
        expected = {hook: done.rows(hook) for hook in done.hook_points}
        expected_index = np.asarray(done.file["prompt_index"][:])
    path = tmp_path / "c.h5"

    def check_killed() -> None:
        if not path.exists():
            return  # killed before the file was in place
        with ActivationCache(path, allow_incomplete=True) as partial:  # readable, its metadata consistent
            for hook in partial.hook_points:
                committed = json.loads(partial.file.attrs["progress"])["rows"][hook]
                assert np.array_equal(partial.rows(hook, 0, committed), expected[hook][:committed])
            if not partial.complete:
                with pytest.raises(ClearSaeError, match="incomplete"):
                    ActivationCache(path)

    def check_done() -> None:
        with ActivationCache(path) as cache:
            for hook, rows in expected.items():
                assert np.array_equal(cache.rows(hook), rows)
            assert np.array_equal(cache.file["prompt_index"][:], expected_index)

    assert (
        kill_loop(
            server,
            "cache",
            random.Random(1),
            6 * kills,
            calls,
            lambda: path.unlink(),
            check_killed,
            check_done,
            path=path,
        )
        == 6 * kills
    )


def test_training_killed_anywhere_never_loads_a_partial_folder_and_a_rerun_gives_the_same_weights(
    server, tmp_path, kills
):
    cache = tmp_path / "c.h5"
    server.run("cache", path=cache)
    reference = tmp_path / "reference"
    calls = server.run("train", cache=cache, out=reference)["calls"]
    expected = {hook: Dictionaries(reference).fingerprint(hook) for hook in Dictionaries(reference).hook_points}
    out = tmp_path / "d"

    def check_killed() -> None:
        try:
            dictionaries = Dictionaries(out)
        except ClearSaeError:
            return  # refused: no folder, no manifest, or an unfinished run
        assert {hook: dictionaries.fingerprint(hook) for hook in dictionaries.hook_points} == expected

    def check_done() -> None:
        dictionaries = Dictionaries(out)
        assert {hook: dictionaries.fingerprint(hook) for hook in dictionaries.hook_points} == expected
        for hook in expected:
            assert dictionaries.sae(hook).cfg.d_sae == 768

    def reset() -> None:
        import shutil

        shutil.rmtree(out)

    assert (
        kill_loop(
            server, "train", random.Random(2), 6 * kills, calls, reset, check_killed, check_done, cache=cache, out=out
        )
        == 6 * kills
    )


def test_learning_a_concept_killed_anywhere_keeps_the_library_whole_and_a_rerun_adds_it(server, tmp_path, kills):
    cache, dictionaries = tmp_path / "c.h5", tmp_path / "d"
    server.run("cache", path=cache)
    server.run("train", cache=cache, out=dictionaries)
    base, reference = tmp_path / "base.json", tmp_path / "reference.json"
    server.run("saves", library=base, prefix="kept", n=3, done=tmp_path / "ignored")
    reference.write_text(base.read_text())
    calls = server.run("concept", dictionaries=dictionaries, library=reference, name="dog")["calls"]
    expected = ConceptLibrary.load(reference).concepts
    library = tmp_path / "lib.json"

    def reset() -> None:
        library.write_text(base.read_text())  # a library holding the earlier entries only

    def check_killed() -> None:
        found = ConceptLibrary.load(library).concepts  # always valid JSON, every earlier entry kept
        assert set(found) in ({"kept0", "kept1", "kept2"}, set(expected))
        assert all(found[name] == expected[name] for name in found)

    def check_done() -> None:
        assert ConceptLibrary.load(library).concepts == expected

    reset()
    assert (
        kill_loop(
            server,
            "concept",
            random.Random(3),
            5 * kills,
            calls,
            reset,
            check_killed,
            check_done,
            dictionaries=dictionaries,
            library=library,
            name="dog",
        )
        == 5 * kills
    )


def test_library_saves_killed_anywhere_lose_no_entry_that_was_saved(server, tmp_path, kills):
    library, done = tmp_path / "lib.json", tmp_path / "done.txt"
    calls = server.run("saves", library=tmp_path / "reference.json", prefix="e", n=8, done=tmp_path / "x")["calls"]
    rng = random.Random(4)
    for round_ in range(5 * kills):
        for path in (library, done):
            path.unlink(missing_ok=True)
        reply = server.run("saves", die_at=rng.randint(1, calls), library=library, prefix="e", n=8, done=done)
        saved = [f"e{i}" for i in done.read_text().split()] if done.exists() else []
        found = set(ConceptLibrary.load(library).concepts) if library.exists() else set()
        # Every save that finished is there, and at most the one the kill interrupted besides.
        assert set(saved) <= found and len(found - set(saved)) <= 1 and found <= {f"e{i}" for i in range(8)}
        assert reply["killed"] or len(saved) == 8, round_
