"""Training past one process: checkpoints and resume mid-layer, and `clear-sae train` under torchrun (CPU, gloo),
with layers dealt out over ranks or each layer trained data-parallel, a rank killed mid-way, and two nodes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clear_sae.cache import INDEX, SHARDS_FORMAT, ActivationCache, CacheConfig, write_cache
from clear_sae.dictionary import PROGRESS, Dictionaries, TrainConfig, train_dictionaries
from clear_sae.distributed import ProcessGroup
from clear_sae.errors import ClearSaeError
from clear_sae.sae.trainer import TopKTrainConfig, step_grads

HERE = Path(__file__).resolve().parent
LAYERS = ["text_encoder.blocks.1", "text_encoder.blocks.3"]
QUICK = dict(expansion=2, k=8, tokens=3072, batch_size=256)  # 12 steps a layer
CLI_QUICK = ["--expansion", "2", "--k", "8", "--tokens", "3072", "--batch-size", "256"]


def _weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every layer's saved tensors in a dictionary folder."""
    return {
        hook: load_file(str(folder / hook / "sae_weights.safetensors")) for hook in Dictionaries(folder).hook_points
    }


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(
        wa[h].keys() == wb[h].keys() and all(torch.equal(wa[h][n], wb[h][n]) for n in wa[h]) for h in wa
    )


# --- the reader: a stream resumed part-way, and each rank's part --------------------------------------------------


def test_a_stream_started_part_way_is_the_rest_of_the_whole_stream(minilm_cache):
    with ActivationCache(minilm_cache) as cache:
        hook = LAYERS[0]
        total = cache.n_rows(hook)
        args = dict(batch_size=96, n_tokens=3 * total, seed=5, buffer_rows=1024)
        whole = list(cache.iter_minibatches(hook, **args))
        for skip in (1, 37, len(whole) - 1):
            rest = list(cache.iter_minibatches(hook, **args, skip_batches=skip))
            assert len(rest) == len(whole) - skip
            assert all(torch.equal(a, b) for a, b in zip(rest, whole[skip:]))


def test_a_stream_resumed_after_several_passes_is_the_rest_of_the_whole_stream(minilm, tmp_path):
    """With the whole layer in one shuffle buffer, the rows left over from one pass meet their own second copy in the
    next, so a leftover can hold a row twice; a stream started after it reads that leftover back, repeats and all."""
    path = tmp_path / "tiny.h5"
    write_cache(minilm, TINY, path, EMBED, CacheConfig(batch_size=2), progress=False)
    with ActivationCache(path) as cache:
        hook = EMBED[0]
        rows = cache.rows(hook)
        repeated = np.array([5, 3, 5, 0, 3, 3])
        assert np.array_equal(cache._read_rows(hook, repeated), rows[repeated])
        for seed in range(3):
            args = dict(batch_size=8, n_tokens=20 * len(rows), seed=seed, buffer_rows=4096)
            whole = list(cache.iter_minibatches(hook, **args))
            for skip in range(1, len(whole)):
                rest = cache.iter_minibatches(hook, **args, skip_batches=skip)
                assert torch.equal(next(iter(rest)), whole[skip])


def test_the_ranks_parts_split_the_rows_between_them(minilm_cache):
    """Over one pass, two ranks' parts hold every row once: none twice, none on both ranks."""
    with ActivationCache(minilm_cache) as cache:
        hook = LAYERS[0]
        chunk = cache.file[hook]["acts"].chunks[0]
        stored = cache.rows(hook)
        seen = []
        for rank in (0, 1):
            rows = stored[
                np.concatenate(
                    [np.arange(s, min(s + chunk, len(stored))) for s in range(0, len(stored), chunk)[rank::2]]
                )
            ]
            served = torch.cat(list(cache.iter_minibatches(hook, 1, len(rows), seed=2, part=(rank, 2)))).numpy()
            assert sorted(map(bytes, served)) == sorted(map(bytes, rows))
            seen.append(served)
        assert not set(map(bytes, seen[0])) & set(map(bytes, seen[1]))


# --- checkpoints and resume in one process -------------------------------------------------------------------------


def _interrupted(cache, out, cfg, monkeypatch, after: int) -> None:
    """Train `LAYERS` into `out`, interrupted right after the `after`-th checkpoint is saved."""
    import clear_sae.sae.checkpoint as checkpoint

    saved, save = [], checkpoint.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(args[0])
        if len(saved) == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_dictionaries(cache, out, LAYERS, cfg, progress=False)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)


@pytest.fixture(scope="module")
def uninterrupted(minilm_cache, tmp_path_factory) -> Path:
    """`LAYERS` trained in one go, saving checkpoints every 2 steps."""
    out = tmp_path_factory.mktemp("whole") / "d"
    with ActivationCache(minilm_cache) as cache:
        train_dictionaries(cache, out, LAYERS, TrainConfig(**QUICK, checkpoint_every=2), progress=False)
    return out


@pytest.mark.parametrize("after", [2, 7], ids=["in the first layer", "in the second layer"])
def test_a_run_resumed_mid_layer_ends_bit_for_bit_where_an_uninterrupted_one_ends(
    minilm_cache, uninterrupted, tmp_path, monkeypatch, after
):
    cfg = TrainConfig(**QUICK, checkpoint_every=2)
    with ActivationCache(minilm_cache) as cache:
        _interrupted(cache, tmp_path / "cut", cfg, monkeypatch, after)
        assert (tmp_path / "cut" / PROGRESS).is_dir()
        with pytest.raises(ClearSaeError, match="unfinished training run .*--resume"):
            Dictionaries(tmp_path / "cut")
        manifest = train_dictionaries(cache, tmp_path / "cut", LAYERS, cfg, progress=False, resume=True)
    assert manifest["complete"] is True and list(manifest["layers"]) == LAYERS
    assert not (tmp_path / "cut" / PROGRESS).exists()
    assert _same_weights(uninterrupted, tmp_path / "cut")
    whole = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["layers"] == whole["layers"]


def test_a_cpu_run_resumes_with_the_thread_count_it_started_with(minilm_cache, uninterrupted, tmp_path, monkeypatch):
    """A matmul split over another number of threads sums in another order: the resumed part of the run must use the
    count the run started with (the process may have picked another, on a busier machine). A run whose manifest
    predates the recorded count still resumes, with the process's own count."""
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    cfg = TrainConfig(**QUICK, checkpoint_every=2)
    with ActivationCache(minilm_cache) as cache:
        for folder in ("cut", "older"):
            _interrupted(cache, tmp_path / folder, cfg, monkeypatch, 2)
        manifest_path = tmp_path / "older" / "manifest.json"
        older = json.loads(manifest_path.read_text())
        assert older.pop("cpu_threads") == threads
        manifest_path.write_text(json.dumps(older))
        torch.set_num_threads(other)
        try:
            train_dictionaries(cache, tmp_path / "older", LAYERS, cfg, progress=False, resume=True)
            assert torch.get_num_threads() == other
            train_dictionaries(cache, tmp_path / "cut", LAYERS, cfg, progress=False, resume=True)
            assert torch.get_num_threads() == threads
        finally:
            torch.set_num_threads(threads)
    assert _same_weights(uninterrupted, tmp_path / "cut")
    assert "cpu_threads" not in json.loads((tmp_path / "cut" / "manifest.json").read_text())


def test_a_layer_refused_before_training_leaves_a_finished_folder_as_it_was(minilm_cache, uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "d")
    before = (tmp_path / "d" / "manifest.json").read_bytes()
    too_many = TrainConfig(**{**QUICK, "k": 10_000})
    with ActivationCache(minilm_cache) as cache:
        with pytest.raises(ClearSaeError, match=r"--k 10000 does not fit the 768 latents at text_encoder.blocks.3"):
            train_dictionaries(cache, tmp_path / "d", LAYERS[1:], too_many, force=True, progress=False)
    assert (tmp_path / "d" / "manifest.json").read_bytes() == before
    assert Dictionaries(tmp_path / "d").hook_points == LAYERS


def test_a_forced_run_drops_the_records_an_interrupted_one_may_have_overwritten(
    minilm_cache, uninterrupted, tmp_path, monkeypatch
):
    """An interrupted --force run saved the first layer with k 4 before it could record it; a later --force run of
    the second layer alone must not finish the folder with the first layer's old record (k 8) beside its new
    weights."""
    import clear_sae.dictionary as dictionary
    import clear_sae.sae.checkpoint as checkpoint

    shutil.copytree(uninterrupted, tmp_path / "d")
    save = checkpoint.save_checkpoint

    def save_then_stop_in_the_second_layer(path, *args, **kwargs):
        save(path, *args, **kwargs)
        if LAYERS[1] in str(path):
            raise KeyboardInterrupt

    with ActivationCache(minilm_cache) as cache:
        monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_stop_in_the_second_layer)
        smaller = TrainConfig(**{**QUICK, "k": 4}, checkpoint_every=2)
        with pytest.raises(KeyboardInterrupt):
            train_dictionaries(cache, tmp_path / "d", LAYERS, smaller, force=True, progress=False)
        monkeypatch.setattr(checkpoint, "save_checkpoint", save)
        assert json.loads((tmp_path / "d" / LAYERS[0] / "cfg.json").read_text())["k"] == 4
        warned: list[str] = []
        monkeypatch.setattr(dictionary.log, "warning", warned.append)
        train_dictionaries(cache, tmp_path / "d", LAYERS[1:], TrainConfig(**QUICK), force=True, progress=False)
    assert warned == [f"{LAYERS[0]} is left out of the dictionaries: an interrupted run was training it; retrain it"]
    assert Dictionaries(tmp_path / "d").hook_points == LAYERS[1:]


def test_resume_refuses_another_run_and_a_folder_with_nothing_to_resume(minilm_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**QUICK, checkpoint_every=3)
    with ActivationCache(minilm_cache) as cache:
        with pytest.raises(ClearSaeError, match="nothing to resume: .* holds no training run"):
            train_dictionaries(cache, tmp_path / "none", LAYERS, cfg, progress=False, resume=True)
        _interrupted(cache, tmp_path / "cut", cfg, monkeypatch, 2)
        checkpoint = (tmp_path / "cut" / PROGRESS / f"{LAYERS[0]}.checkpoint.safetensors").read_bytes()
        other = TrainConfig(**{**QUICK, "lr": 5e-4}, checkpoint_every=3)
        with pytest.raises(ClearSaeError, match="cannot resume .*another train_config.*--force"):
            train_dictionaries(cache, tmp_path / "cut", LAYERS, other, progress=False, resume=True)
        # Saving checkpoints more or less often is the same run.
        train_dictionaries(
            cache, tmp_path / "cut", LAYERS, TrainConfig(**QUICK, checkpoint_every=5), False, False, True
        )
        with pytest.raises(ClearSaeError, match="nothing to resume: .* holds a finished training run"):
            train_dictionaries(cache, tmp_path / "cut", LAYERS, cfg, progress=False, resume=True)
    assert len(checkpoint) > 0


def test_a_corrupt_checkpoint_is_a_one_line_error(minilm_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**QUICK, checkpoint_every=3)
    with ActivationCache(minilm_cache) as cache:
        _interrupted(cache, tmp_path / "cut", cfg, monkeypatch, 2)
        path = tmp_path / "cut" / PROGRESS / f"{LAYERS[0]}.checkpoint.safetensors"
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(ClearSaeError, match="not a readable training checkpoint .*delete it"):
            train_dictionaries(cache, tmp_path / "cut", LAYERS, cfg, progress=False, resume=True)


def test_checkpoints_and_data_parallel_training_are_refused_where_sae_lens_trains(minilm_cache, tmp_path):
    with ActivationCache(minilm_cache) as cache:
        with pytest.raises(ClearSaeError, match="--checkpoint-every is for topk SAEs"):
            train_dictionaries(cache, tmp_path / "d", LAYERS, TrainConfig(architecture="standard", checkpoint_every=5))
    assert not (tmp_path / "d").exists()


def test_data_parallel_steps_larger_than_the_token_budget_are_refused_on_every_rank(minilm_cache, tmp_path):
    """Checked before any collective, so that a refused run fails on every rank instead of leaving one waiting."""
    cfg = TrainConfig(expansion=2, k=8, tokens=768, batch_size=512, distribute="data")
    with ActivationCache(minilm_cache) as cache:
        for rank in (0, 1):
            with pytest.raises(ClearSaeError, match="2 ranks of --batch-size 512 take more than --tokens 768"):
                train_dictionaries(cache, tmp_path / "d", LAYERS, cfg, progress=False, group=ProcessGroup(rank, 2))
    assert not (tmp_path / "d").exists()


def test_averaging_two_half_batches_gradients_is_the_whole_batchs_gradient():
    """What data-parallel training relies on: the mean over ranks of each rank's gradient on its half is the
    gradient on the whole batch (the loss is a mean over tokens), AuxK included."""
    from clear_sae.sae.trainer import TopKParams

    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(128, dtype=torch.bool)
    dead[::4] = True
    grads = []
    for rows in (x, x[:128], x[128:]):
        p = TopKParams(32, 128, x.mean(0), seed=1)
        step_grads(p, rows, TopKTrainConfig(k=6), dead, kernel="sparse")
        grads.append([t.grad for t in p.tensors()])
    for whole, first, second in zip(*grads):
        assert torch.allclose((first + second) / 2, whole, atol=1e-6 * float(whole.abs().max()))


# --- under torchrun ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    # One thread per process everywhere, so that one process and several ranks do the same arithmetic.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(*args: str, ranks: int = 2, script: list[str] | None = None) -> subprocess.CompletedProcess:
    """`clear-sae ARGS` (or `script`) under torchrun on one node with `ranks` processes."""
    # --standalone: torchrun finds a free port itself, so that two runs never race for one.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = script or ["-m", "clear_sae"]
    return subprocess.run([*launcher, *command, *args], env=_env(), capture_output=True, text=True, timeout=600)


def _train_args(cache: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--cache", str(cache), "--out", str(out), "--layers", ",".join(LAYERS), *CLI_QUICK, *more]


def _alone(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clear_sae", *args], env=_env(), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def one_process(minilm_cache, tmp_path_factory) -> Path:
    """`LAYERS` trained by one process, one thread."""
    out = tmp_path_factory.mktemp("alone") / "d"
    done = _alone(*_train_args(minilm_cache, out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_layers_dealt_out_over_two_ranks_give_the_same_dictionaries_as_one_process(minilm_cache, one_process, tmp_path):
    done = _torchrun(*_train_args(minilm_cache, tmp_path / "d", "--distribute", "layers"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert _same_weights(one_process, tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["hook_points"] == LAYERS
    assert (done.stdout + done.stderr).count("dictionaries ->") == 1, "only the first rank reports"


def test_data_parallel_training_over_two_ranks_matches_one_process_at_the_doubled_batch(
    minilm_cache, one_process, tmp_path
):
    """Two ranks of 128 tokens each against one process of 256: other rows in each step, so not the same weights;
    the same quality within 0.02 of explained variance, and the same number of steps and tokens."""
    done = _torchrun(*_train_args(minilm_cache, tmp_path / "dp", "--distribute", "data", "--batch-size", "128"))
    assert done.returncode == 0, done.stderr[-3000:]
    dp = json.loads((tmp_path / "dp" / "manifest.json").read_text())["layers"]
    one = json.loads((one_process / "manifest.json").read_text())["layers"]
    for hook in LAYERS:
        assert dp[hook]["training_tokens"] == one[hook]["training_tokens"] == 3072
        assert dp[hook]["extra"]["data_parallel_ranks"] == 2
        assert abs(dp[hook]["explained_variance"] - one[hook]["explained_variance"]) < 0.02


def test_data_parallel_ranks_fed_the_halves_of_each_batch_train_the_sae_one_process_trains_on_the_whole(tmp_path):
    """The same rows in every step: two ranks (gradients averaged, dead latents agreed) and one process end with the
    same SAE up to the order of float sums."""
    done = _torchrun(str(tmp_path / "gap.json"), script=[str(HERE / "data_parallel_rank.py")])
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "gap.json").read_text())
    assert max(record["relative_gap"].values()) < 1e-4, record
    assert record["dead_fraction"][0] == record["dead_fraction"][1] > 0, "latents died: AuxK took part"


def test_every_rank_leaves_its_process_group_before_the_interpreter_shuts_down(tmp_path):
    """A gloo group left to interpreter shutdown can abort a rank whose work is done (SIGABRT), failing the run:
    `join` registers the group's teardown to run at exit."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import atexit, os, sys\n"
        "import torch.distributed as dist\n"
        "from clear_sae.distributed import join\n"
        "out = sys.argv[1] + os.environ['RANK']\n"
        # Registered before `join`, so it runs after the handlers `join` registers (last in, first out).
        "atexit.register(lambda: open(out, 'w').write(str(dist.is_initialized())))\n"
        "group = join()\n"
        "group.barrier()\n"
        "open(out, 'w').write('no exit handlers ran')\n"
    )
    done = _torchrun(str(tmp_path / "initialized-at-exit-"), script=[str(script)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"initialized-at-exit-{rank}").read_text() for rank in (0, 1)] == ["False", "False"]


def test_a_rank_killed_mid_training_fails_the_run_and_resume_finishes_it_as_if_uninterrupted(
    minilm_cache, one_process, tmp_path
):
    out = tmp_path / "d"
    args = _train_args(minilm_cache, out, "--checkpoint-every", "4")
    killed = _torchrun(*args, script=[str(HERE / "dying_rank.py"), "1", "2"])
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or "Signals.SIGKILL" in killed.stderr, killed.stderr[-3000:]
    with pytest.raises(ClearSaeError, match="unfinished training run"):
        Dictionaries(out)
    assert (out / PROGRESS / f"{LAYERS[1]}.checkpoint.safetensors").is_file(), "rank 1's layer stays resumable"
    resumed = _torchrun(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _same_weights(one_process, out)


def test_two_nodes_of_one_process_each_complete_a_run(minilm_cache, one_process, tmp_path):
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
            + ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "clear-sae-test"]
            + ["-m", "clear_sae", *_train_args(minilm_cache, tmp_path / "d")],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert _same_weights(one_process, tmp_path / "d")


# --- sharded caches ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_prompts_file(tmp_path_factory, small_corpus) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(small_corpus[:150]) + "\n")
    return path


def _cache_args(prompts: Path, out: Path, *more: str) -> list[str]:
    return ["cache", "--model", "minilm", "--prompts", str(prompts), "--out", str(out), "--layers", "0,3", *more]


def _rows_by_token(cache: ActivationCache, hook: str) -> list[tuple[str, int, bytes]]:
    """Every stored row at `hook` as (its prompt, its position, its bytes), sorted: the rows, order aside."""
    prompts = cache.prompts()
    owners = cache.prompt_index(hook)
    positions = np.concatenate([f[hook]["position"][:] for f in cache.files])
    rows = cache.rows(hook)
    return sorted((prompts[o], int(p), r.tobytes()) for o, p, r in zip(owners, positions, rows))


def test_two_ranks_cache_the_rows_one_process_caches_and_the_reader_serves_each_once_per_pass(
    shard_prompts_file, tmp_path
):
    alone = _alone(*_cache_args(shard_prompts_file, tmp_path / "one.h5"))
    assert alone.returncode == 0, alone.stderr[-2000:]
    done = _torchrun(*_cache_args(shard_prompts_file, tmp_path / "shards"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    with ActivationCache(tmp_path / "one.h5") as one, ActivationCache(tmp_path / "shards") as sharded:
        assert sharded.prompts() == one.prompts() and sharded.prompts_hash == one.prompts_hash
        for hook in one.hook_points:
            assert _rows_by_token(sharded, hook) == _rows_by_token(one, hook)
            total = sharded.n_rows(hook)
            served = torch.cat(list(sharded.iter_minibatches(hook, 1, total, seed=4, buffer_rows=512))).numpy()
            assert sorted(map(bytes, served)) == sorted(map(bytes, sharded.rows(hook)))
            assert not np.array_equal(served, sharded.rows(hook)), "shuffled across shards"


def test_a_sharded_cache_trains_and_an_unfinished_one_is_a_one_line_error(shard_prompts_file, tmp_path):
    cut = _torchrun(*_cache_args(shard_prompts_file, tmp_path / "shards", "--stop-after-batches", "1"))
    assert cut.returncode == 0, cut.stderr[-3000:]
    with pytest.raises(ClearSaeError, match="has shards but no index.json: .*--resume"):
        ActivationCache(tmp_path / "shards")
    with pytest.raises(ClearSaeError, match="already holds a cache; pass --resume"):
        from clear_sae.backbones import load_backbone

        write_cache(
            load_backbone("minilm"), ["a", "b"], tmp_path / "shards", ["text_encoder.embed"], group=ProcessGroup(0, 2)
        )
    resumed = _torchrun(*_cache_args(shard_prompts_file, tmp_path / "shards", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trained = _alone(
        "train",
        "--cache",
        str(tmp_path / "shards"),
        "--out",
        str(tmp_path / "d"),
        *CLI_QUICK[:4],
        "--tokens",
        "1024",
        "--batch-size",
        "256",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert Dictionaries(tmp_path / "d").hook_points == ["text_encoder.embed", "text_encoder.blocks.2"]


# --- a sharded cache's ranks simulated one after another in this process -------------------------------------------


class SimulatedRank(ProcessGroup):
    """Rank `rank` of `size`, run alone in this process: a barrier returns at once, and the n-th gather sees every
    other rank give `others[n]` (this rank's own value once `others` runs out)."""

    def __init__(self, rank: int, size: int, others: list[Any] | None = None) -> None:
        super().__init__(rank, size)
        self.others = list(others or [])

    def barrier(self) -> None:
        return None

    def gather(self, value: Any) -> list[Any]:
        theirs = self.others.pop(0) if self.others else value
        return [value if rank == self.rank else theirs for rank in range(self.size)]


TINY = ["a red fox", "a blue car", "a green tree", "a white boat", "a black cat", "a brown dog"]
EMBED = ["text_encoder.embed"]


def _sharded(backbone, prompts: list[str], folder: Path, size: int, force: bool = False) -> None:
    """`prompts` cached into `folder` by `size` ranks, the first rank last (it writes the index). Ranks that run
    after another find its shard, which real ranks checking the folder together would not: they run with --resume
    (which starts a missing shard afresh) unless `force`."""
    for rank in reversed(range(size)):
        group = SimulatedRank(rank, size)
        cfg = CacheConfig(batch_size=1)
        write_cache(backbone, prompts, folder, EMBED, cfg, resume=not force, force=force, progress=False, group=group)


def test_a_shard_one_rank_cannot_resume_refuses_the_run_on_every_rank_before_any_writes(minilm, tmp_path):
    folder = tmp_path / "shards"
    _sharded(minilm, TINY[:4], folder, 2)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    changed = [*TINY[:3], "a yellow kite"]  # only rank 1's block differs
    with pytest.raises(
        ClearSaeError, match=r"cannot resume .*shard-00001\.h5: it was written with prompts_hash"
    ) as own:
        write_cache(minilm, changed, folder, EMBED, resume=True, group=SimulatedRank(1, 2), progress=False)
    # Rank 0's own shard could continue; it raises rank 1's refusal instead of going on to write.
    with pytest.raises(ClearSaeError) as told:
        write_cache(minilm, changed, folder, EMBED, resume=True, group=SimulatedRank(0, 2, [str(own.value)]))
    assert str(told.value) == str(own.value)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_an_unfinished_resume_leaves_no_index_of_the_earlier_run_behind(minilm, tmp_path):
    folder = tmp_path / "shards"
    _sharded(minilm, TINY[:4], folder, 2)
    assert ActivationCache(folder).prompts() == TINY[:4]
    # Three ranks continue it with two more prompts: ranks 0 and 1 find their blocks finished, rank 2 stops early.
    write_cache(
        minilm, TINY, folder, EMBED, resume=True, stop_after_batches=1, group=SimulatedRank(2, 3), progress=False
    )
    write_cache(minilm, TINY, folder, EMBED, resume=True, group=SimulatedRank(0, 3, [None, False]), progress=False)
    assert not (folder / INDEX).exists()
    with pytest.raises(ClearSaeError, match="has shards but no index.json: its run has not finished"):
        ActivationCache(folder)
    write_cache(minilm, TINY, folder, EMBED, resume=True, group=SimulatedRank(2, 3), progress=False)
    write_cache(minilm, TINY, folder, EMBED, resume=True, group=SimulatedRank(0, 3), progress=False)
    with ActivationCache(folder) as cache:
        assert cache.prompts() == TINY and cache.complete


def test_force_on_fewer_ranks_removes_the_earlier_runs_extra_shards(minilm, tmp_path):
    folder = tmp_path / "shards"
    _sharded(minilm, TINY, folder, 3)
    _sharded(minilm, TINY, folder, 2, force=True)
    assert sorted(path.name for path in folder.glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    with ActivationCache(folder) as cache:
        assert cache.prompts() == TINY


def test_an_incomplete_sharded_cache_counts_the_prompts_of_every_shard(minilm, tmp_path):
    folder = tmp_path / "shards"
    _sharded(minilm, TINY[:4], folder, 2)
    with h5py.File(folder / "shard-00001.h5", "r+") as f:  # as if shard 1 had stopped after its first prompt
        f.attrs["complete"] = False
        f.attrs["progress"] = json.dumps({**json.loads(f.attrs["progress"]), "n_prompts_done": 1})
    with pytest.raises(ClearSaeError, match=r"is incomplete \(3 of 4 prompts\)"):
        ActivationCache(folder)


@pytest.mark.parametrize(
    "index", [[], "shards", {"format": SHARDS_FORMAT, "shards": [{"file": "shard-00000.h5", "first_prompt": 0}]}]
)
def test_a_malformed_shard_index_is_a_one_line_error(minilm, tmp_path, index):
    folder = tmp_path / "shards"
    _sharded(minilm, TINY[:4], folder, 2)
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(
        ClearSaeError, match=r"index\.json is not a cache index \(.*\); recreate the cache with --force"
    ):
        ActivationCache(folder)


def test_activations_a_shard_cannot_hold_name_the_prompt_by_its_place_in_the_whole_list(minilm, tmp_path):
    from clear_sae.backbones import first_tensor, replace_first_tensor

    def overflow(module, inputs, output):
        return replace_first_tensor(output, first_tensor(output) * 1e6)

    handle = minilm.module("text_encoder.blocks.1").register_forward_hook(overflow)
    try:
        with pytest.raises(ClearSaeError, match=r"reach .* on prompt 3 \('a green tree'\)"):
            write_cache(
                minilm,
                TINY[:4],
                tmp_path / "shards",
                ["text_encoder.blocks.1"],
                CacheConfig(batch_size=1, dtype="float16"),
                group=SimulatedRank(1, 2),
                progress=False,
            )
    finally:
        handle.remove()


def test_data_parallel_ranks_without_a_part_of_the_cache_are_refused_before_training(minilm, tmp_path):
    _sharded(minilm, TINY[:4], tmp_path / "shards", 2)
    cfg = TrainConfig(expansion=2, k=4, tokens=64, batch_size=8, distribute="data")
    with ActivationCache(tmp_path / "shards") as cache:
        chunks = len(cache._chunks(EMBED[0])[0])
        with pytest.raises(
            ClearSaeError, match=f"too few rows at text_encoder.embed to give each of {chunks + 1} ranks"
        ):
            train_dictionaries(cache, tmp_path / "d", EMBED, cfg, progress=False, group=SimulatedRank(0, chunks + 1))
    assert not (tmp_path / "d").exists()
