"""The fault-injection tests' worker (tests/test_faults.py): a process that loads MiniLM once and forks one child per
request to run a clear_sae operation, which kills itself with SIGKILL at the n-th call of its file operations.

A forked child starts in milliseconds (a new process would pay 3 s of imports and model loading per kill point),
and the parent never runs a torch operation itself, so its children inherit no thread pool that fork could leave
locked. One JSON request per line on stdin: `{"op", "args", "die_at", "log"}`; one JSON reply per line on stdout:
`{"killed", "code", "calls"}` (`calls`: the file operations a child that was not killed made).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the tokenizer's threads must not be running when we fork

import fcntl  # noqa: E402  (after the environment is set)

import h5py  # noqa: E402
import safetensors.torch  # noqa: E402

import clear_sae.sae.trainer  # noqa: E402
from clear_sae.backbones import load_backbone  # noqa: E402
from clear_sae.cache import ActivationCache, CacheConfig, write_cache  # noqa: E402
from clear_sae.concepts import ConceptConfig, learn_concept  # noqa: E402
from clear_sae.corpus import concept_prompts  # noqa: E402
from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries  # noqa: E402
from clear_sae.library import ConceptEntry, ConceptLibrary, SelectionSettings  # noqa: E402

HOOKS = ["text_encoder.blocks.1", "text_encoder.blocks.3"]
PROMPTS = [
    f"a {colour} {animal} {verb} by the {place}"
    for colour in ("red", "blue", "green", "white")
    for animal in ("dog", "cat", "horse", "goat")
    for verb in ("running", "sleeping", "jumping")
    for place in ("river", "sea")
]
"""96 prompts: 12 batches of 8."""
TRAIN = TrainConfig(expansion=2, k=8, tokens=2048, batch_size=256)

# The calls a child may die at: every step that writes a file, renames one, takes a lock or trains.
CALLS: list[tuple[Any, str]] = [
    (os, "replace"),
    (os, "rename"),
    (os, "chmod"),
    (tempfile, "mkstemp"),
    (shutil, "rmtree"),
    (Path, "replace"),
    (Path, "mkdir"),
    (Path, "write_text"),
    (fcntl, "flock"),
    (h5py.File, "flush"),
    (h5py.File, "close"),
    (h5py.Dataset, "resize"),
    (h5py.Dataset, "__setitem__"),
    (h5py.AttributeManager, "__setitem__"),
    (safetensors.torch, "save_file"),
    (clear_sae.sae.trainer, "apply_update"),
]


def die_at(n: int, counter: list[int]) -> None:
    """Make the n-th call among `CALLS` kill this process with SIGKILL (n = 0: never), counting calls in `counter`."""
    for owner, name in CALLS:
        original = getattr(owner, name)

        def counted(*args: Any, _original: Callable = original, **kwargs: Any) -> Any:
            counter[0] += 1
            if counter[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(*args, **kwargs)

        setattr(owner, name, counted)


def op_cache(path: str, backbone: Any) -> None:
    """Write (or resume) the cache of `PROMPTS` at `HOOKS`."""
    write_cache(
        backbone,
        PROMPTS,
        path,
        HOOKS,
        CacheConfig(batch_size=8, dtype="float32"),
        resume=Path(path).exists(),
        progress=False,
    )


def op_train(cache: str, out: str, backbone: Any) -> None:
    """Train (or retrain) the dictionaries of `HOOKS` from `cache` into `out`."""
    with ActivationCache(cache) as activations:
        train_dictionaries(activations, out, HOOKS, TRAIN, force=True, progress=False)


def op_concept(dictionaries: str, library: str, name: str, backbone: Any) -> None:
    """Learn the shipped concept `name` on `dictionaries` and save it into `library`."""
    target, nontarget = concept_prompts(name, n=20)
    # Dictionaries trained on 2,048 tokens hold no latent that their own captions leave quiet, so the background
    # check is off: what is tested here is what a kill leaves of the library.
    cfg = ConceptConfig(background=0)
    entry, _ = learn_concept(backbone, Dictionaries(dictionaries), name, target, nontarget, cfg, hook_points=HOOKS)
    library_file = ConceptLibrary.load(library, missing_ok=True)
    library_file.add(entry)
    library_file.save()


def op_saves(library: str, prefix: str, n: int, done: str, backbone: Any) -> None:
    """Add `n` small entries to `library`, one save each, appending each finished save's index to `done`."""
    for i in range(n):
        library_file = ConceptLibrary.load(library, missing_ok=True)
        library_file.add(small_entry(f"{prefix}{i}"))
        library_file.save()
        with open(done, "a") as record:
            record.write(f"{i}\n")


def small_entry(name: str) -> ConceptEntry:
    """An entry with made-up latents: what library saves store, without learning anything."""
    selection = SelectionSettings(0.1, 0.05, 32, "energy", 0.3, 0)
    return ConceptEntry(name, "text_encoder.blocks.1", [len(name)], 1.0, ".", "minilm", "minilm", "energy", selection)


OPS = {"cache": op_cache, "train": op_train, "concept": op_concept, "saves": op_saves}


def serve() -> None:
    """Answer requests until stdin closes."""
    backbone = load_backbone("minilm")
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        calls_file = request["log"] + ".calls"
        pid = os.fork()
        if pid == 0:
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)
            os.dup2(log, 2)
            counter = [0]
            die_at(request["die_at"], counter)
            code = 0
            try:
                OPS[request["op"]](**request["args"], backbone=backbone)
            except BaseException:
                traceback.print_exc()
                code = 1
            with open(calls_file, "w") as out:
                out.write(str(counter[0]))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        calls = None if killed else int(Path(calls_file).read_text())
        reply = {"killed": killed, "code": None if killed else os.waitstatus_to_exitcode(status), "calls": calls}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()
