"""The HDF5 activation cache: schema, no padding, resume, bounded shuffled reading, bad files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.errors import ClearSaeError

PROMPTS = [
    f"a {c} {a} {v} near the river at dusk, shot {i}"
    for i, (c, a, v) in enumerate(
        (c, a, v)
        for c in ("red", "blue", "green")
        for a in ("dog", "cat", "horse", "French horn player")
        for v in ("running", "sleeping", "jumping", "dancing slowly")
    )
]


def _write(backbone, path, **kwargs):
    cfg = kwargs.pop("cfg", CacheConfig(batch_size=8, dtype="float32"))
    return write_cache(backbone, PROMPTS, path, backbone.hook_points, cfg, progress=False, **kwargs)


def test_schema_and_no_padding(minilm, tmp_path):
    path = _write(minilm, tmp_path / "c.h5")
    batch = minilm.tokenize(PROMPTS)
    n_tokens = int(batch["attention_mask"].sum())
    with h5py.File(path) as f:
        assert f.attrs["backbone_id"] == "minilm"
        assert json.loads(f.attrs["hook_points"]) == minilm.hook_points
        assert f.attrs["complete"]
        assert [p.decode() for p in f["prompts"][:]] == PROMPTS
        assert f["prompt_index"].shape == (n_tokens,)
        for hook in minilm.hook_points:
            assert f[hook]["acts"].shape == (n_tokens, 384)
        # Rows equal the model's states at the recorded (prompt, position), padding never stored.
        out = minilm.run(PROMPTS[:3], ["text_encoder.blocks.2"])["text_encoder.blocks.2"]
        rows = f["prompt_index"][:] < 3
        got = f["text_encoder.blocks.2"]["acts"][rows]
        expected = out.acts[out.mask].numpy()
        assert np.allclose(got, expected, atol=1e-5)
        assert f["position"][:][rows].tolist() == torch.nonzero(out.mask)[:, 1].tolist()


def test_interrupted_run_resumes_to_identical_rows(minilm, tmp_path):
    full = _write(minilm, tmp_path / "full.h5")
    part = _write(minilm, tmp_path / "part.h5", stop_after_batches=2)
    with ActivationCache(part, allow_incomplete=True) as cache:
        assert not cache.complete
    with pytest.raises(ClearSaeError, match="incomplete.*--resume"):
        ActivationCache(part)
    # Simulate a crash mid-batch: rows written after the last commit must be dropped on resume.
    with h5py.File(part, "r+") as f:
        for hook in minilm.hook_points:
            n = f[hook]["acts"].shape[0]
            f[hook]["acts"].resize(n + 5, axis=0)
            f[hook]["acts"][n:] = 123.0
    _write(minilm, part, resume=True)
    with ActivationCache(full) as a, ActivationCache(part) as b:
        for hook in minilm.hook_points:
            assert np.array_equal(a.rows(hook), b.rows(hook))
        assert np.array_equal(a.file["prompt_index"][:], b.file["prompt_index"][:])


def test_resume_refuses_other_prompts_and_overwrite_needs_force(minilm, tmp_path):
    path = _write(minilm, tmp_path / "c.h5", stop_after_batches=1)
    before = path.read_bytes()
    with pytest.raises(ClearSaeError, match="cannot resume.*prompts_hash"):
        write_cache(
            minilm,
            PROMPTS[::-1],
            path,
            minilm.hook_points,
            CacheConfig(batch_size=8, dtype="float32"),
            resume=True,
            progress=False,
        )
    with pytest.raises(ClearSaeError, match="already exists; pass --resume.*--force"):
        _write(minilm, path)
    assert path.read_bytes() == before


def test_minibatches_cover_the_data_shuffled_and_repeat(minilm, tmp_path):
    path = _write(minilm, tmp_path / "c.h5", cfg=CacheConfig(batch_size=16, dtype="float32", chunk_rows=64))
    with ActivationCache(path) as cache:
        hook = "text_encoder.blocks.4"
        total = cache.n_rows(hook)
        batches = list(cache.iter_minibatches(hook, 32, n_tokens=total - total % 32, seed=1, buffer_rows=128))
        served = torch.cat(batches).numpy()
        stored = cache.rows(hook)
        assert served.shape[1] == 384 and all(b.shape == (32, 384) for b in batches)
        # First pass: distinct stored rows, not in file order.
        _, index = np.unique(served, axis=0, return_index=True)
        assert len(index) == len(served)
        assert not np.array_equal(served[:64], stored[:64])
        assert np.isin(served[:, 0], stored[:, 0]).all()
        # Asking for more than the file holds passes over it again.
        more = sum(len(b) for b in cache.iter_minibatches(hook, 32, n_tokens=3 * total, seed=1, buffer_rows=128))
        assert more >= 3 * total - 32
        # Same seed, same order.
        again = torch.cat(list(cache.iter_minibatches(hook, 32, n_tokens=total - total % 32, seed=1, buffer_rows=128)))
        assert np.array_equal(again.numpy(), served)


@pytest.mark.parametrize("kind", ["truncated", "foreign", "text"])
def test_bad_cache_files_give_one_line_errors(minilm, tmp_path, kind):
    path = tmp_path / "bad.h5"
    if kind == "truncated":
        good = _write(minilm, tmp_path / "good.h5")
        path.write_bytes(good.read_bytes()[:5000])
        expected = "truncated or corrupt"
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = np.zeros(3)
        expected = "not a clear_sae activation cache"
    else:
        path.write_text("hello")
        expected = "not a readable HDF5 file"
    before = path.read_bytes()
    with pytest.raises(ClearSaeError, match=expected) as err:
        ActivationCache(path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_an_interrupt_while_creating_the_file_leaves_nothing_to_trip_over(minilm, tmp_path):
    class Interrupting:
        backbone_id, source, hook_points = "minilm", "minilm", minilm.hook_points

        def check_hook_points(self, hooks):
            pass

        def d_model(self, hook):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_cache(Interrupting(), PROMPTS, tmp_path / "c.h5", minilm.hook_points, progress=False)
    assert not (tmp_path / "c.h5").exists()
    _write(minilm, tmp_path / "c.h5", resume=True)  # starts cleanly
    with ActivationCache(tmp_path / "c.h5") as cache:
        assert cache.complete


def test_an_interrupt_swallowed_on_its_way_still_stops_the_cache_at_the_next_batch(minilm, tmp_path):
    """If C code swallows the KeyboardInterrupt that the CLI's handler raised, the loop stops at its next batch."""
    import signal

    from clear_sae import errors

    with pytest.raises(KeyboardInterrupt):
        errors.request_interrupt(signal.SIGINT, None)  # the exception is dropped here, as if swallowed
    try:
        with pytest.raises(KeyboardInterrupt):
            _write(minilm, tmp_path / "c.h5")
    finally:
        errors.clear_interrupt()
    with h5py.File(tmp_path / "c.h5") as f:
        assert json.loads(f.attrs["progress"])["n_prompts_done"] == 0 and not f.attrs["complete"]
    _write(minilm, tmp_path / "c.h5", resume=True)
    with ActivationCache(tmp_path / "c.h5") as cache:
        assert cache.complete


def test_a_cache_being_written_is_neither_written_again_nor_called_corrupt(minilm, tmp_path):
    """While one run holds a cache (its lock), a second `cache` run, with --resume or --force, is refused without
    touching the file, and a reader is told to wait rather than to recreate it."""
    import subprocess
    import sys

    from clear_sae.cache import open_h5
    from clear_sae.io import file_lock

    path = tmp_path / "c.h5"
    write_cache(minilm, ["a dog", "a cat", "a red bus"], path, ["text_encoder.blocks.1"], progress=False)
    before = path.read_bytes()
    with file_lock(path), h5py.File(path, "r+"):  # as the first run holds it, mid-write
        for resume, force in ((True, False), (False, True)):
            with pytest.raises(ClearSaeError, match="being written by another `clear-sae cache` run"):
                write_cache(
                    minilm, ["a dog"], path, ["text_encoder.blocks.1"], resume=resume, force=force, progress=False
                )
        # Another process cannot open it (HDF5 locks the file too); it is told why, and not to recreate it.
        code = f"from clear_sae.cache import open_h5; open_h5({str(path)!r})"
        reader = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        error = reader.stderr.strip().splitlines()[-1]
        assert "being written by another `clear-sae cache` run" in error and "--force" not in error
    assert path.read_bytes() == before
    write_cache(minilm, ["a dog"], path, ["text_encoder.blocks.1"], force=True, progress=False)  # free again
    assert open_h5(path).attrs["complete"]


def test_a_bfloat16_cache_holds_float32_rows_rounded_to_bfloat16(minilm, tmp_path):
    full = _write(minilm, tmp_path / "f32.h5")
    half = _write(minilm, tmp_path / "bf16.h5", cfg=CacheConfig(batch_size=8, dtype="bfloat16"))
    hook = "text_encoder.blocks.3"
    with ActivationCache(full) as exact, ActivationCache(half) as rounded:
        assert rounded.dtype == "bfloat16" and rounded.n_rows(hook) == exact.n_rows(hook)
        want = torch.from_numpy(exact.rows(hook)).to(torch.bfloat16).float().numpy()
        got = rounded.rows(hook)
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert not np.array_equal(got, exact.rows(hook))  # it is rounded, not a float32 copy
        assert np.array_equal(rounded.sample(hook, 50), want[np.unique(np.linspace(0, len(want) - 1, 50).astype(int))])
        batches = list(rounded.iter_minibatches(hook, 16, n_tokens=64, seed=0))
        assert all(b.dtype == torch.float32 for b in batches)
        assert np.isin(torch.cat(batches)[:, 0].numpy(), want[:, 0]).all()
    with h5py.File(half) as f:
        assert f[hook]["acts"].dtype == np.uint16  # the bits, half the bytes of float32


@pytest.mark.parametrize(
    "factor, dtype, message",
    [
        (
            1e6,
            "float16",
            r"activations at text_encoder.blocks.1 reach .* beyond float16's largest value \(65,504\); "
            r"cache with --dtype bfloat16 \(or float32\) --force",
        ),
        (float("nan"), "float32", r"the model gave NaN or infinite activations at text_encoder.blocks.1 on prompt 1 "),
    ],
    ids=["float16-overflow", "nan"],
)
def test_activations_a_cache_cannot_hold_are_refused_before_they_are_stored(minilm, tmp_path, factor, dtype, message):
    """A float16 cache would store activations above 65,504 as infinity, and NaN from the model as NaN; both are
    refused by name, with nothing stored (the run can start again with the advice)."""
    from clear_sae.backbones import first_tensor, replace_first_tensor

    def scaled(module, inputs, output):
        return replace_first_tensor(output, first_tensor(output) * factor)

    handle = minilm.module("text_encoder.blocks.1").register_forward_hook(scaled)
    try:
        with pytest.raises(ClearSaeError, match=message):
            _write(minilm, tmp_path / "c.h5", cfg=CacheConfig(batch_size=8, dtype=dtype))
        if dtype == "float16":  # the advice works: bfloat16 holds these values
            _write(minilm, tmp_path / "c.h5", cfg=CacheConfig(batch_size=8, dtype="bfloat16"), force=True)
            with ActivationCache(tmp_path / "c.h5") as cache:
                assert np.isfinite(cache.rows("text_encoder.blocks.1")).all()
                assert np.abs(cache.rows("text_encoder.blocks.1")).max() > 65504
            return
    finally:
        handle.remove()
    with h5py.File(tmp_path / "c.h5") as f:
        assert not f.attrs["complete"] and json.loads(f.attrs["progress"])["n_prompts_done"] == 0
        assert f["text_encoder.blocks.1"]["acts"].shape[0] == 0


def _forge(f, change: str) -> None:
    """Edit a finished cache's attributes the way a damaged or hand-made file could have them."""
    progress = json.loads(f.attrs["progress"])
    if change == "hook-points-not-json":
        f.attrs["hook_points"] = "text_encoder.blocks.1"
    elif change == "no-hook-points":
        f.attrs["hook_points"] = "[]"
    elif change == "no-widths":
        del f.attrs["d_model"]
    elif change == "wrong-width":
        f.attrs["d_model"] = json.dumps({"text_encoder.blocks.1": 512})
    elif change == "complete-as-text":
        f.attrs["complete"] = "false"
    elif change == "more-rows-than-stored":
        progress["rows"]["text_encoder.blocks.1"] += 500
        f.attrs["progress"] = json.dumps(progress)
    elif change == "more-prompts-than-stored":
        progress["n_prompts_done"] = 10**6
        f.attrs["progress"] = json.dumps(progress)
    elif change == "progress-not-json":
        f.attrs["progress"] = "{"
    elif change == "no-batch-size":
        f.attrs["batch_size"] = 0
    elif change == "complete-too-early":
        f.attrs["complete"] = True
        progress["n_prompts_done"] = 2
        f.attrs["progress"] = json.dumps(progress)


FORGED = {
    "hook-points-not-json": "JSONDecodeError",
    "no-hook-points": "hook_points is not a list of names",
    "no-widths": "KeyError",
    "wrong-width": r"text_encoder.blocks.1 holds rows of width \(384,\), the metadata says 512",
    "complete-as-text": "complete is neither true nor false",
    "more-rows-than-stored": r"progress claims \d+ rows at text_encoder.blocks.1, the file holds \d+",
    "more-prompts-than-stored": "progress claims 1000000 prompts done of 3",
    "progress-not-json": "JSONDecodeError",
    "no-batch-size": "batch_size 0 is not a positive integer",
    "complete-too-early": "marked complete after 2 of 3 prompts",
}


@pytest.mark.parametrize("change", list(FORGED))
def test_a_cache_whose_metadata_contradicts_its_contents_is_refused_for_reading_and_resuming(minilm, tmp_path, change):
    """Forged or damaged attributes give one line, not a KeyError, and --resume never pads the file with rows
    that were never written (a progress claiming more rows than exist)."""
    prompts = ["a red dog", "a cat on a wall", "a blue bus in the rain"]
    path = write_cache(minilm, prompts, tmp_path / "c.h5", ["text_encoder.blocks.1"], progress=False)
    with h5py.File(path, "r+") as f:
        _forge(f, change)
    before = path.read_bytes()
    with pytest.raises(ClearSaeError, match=rf"inconsistent metadata \(({FORGED[change]})") as err:
        ActivationCache(path)
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    with pytest.raises(ClearSaeError, match="inconsistent metadata"):
        write_cache(minilm, prompts, path, ["text_encoder.blocks.1"], resume=True, progress=False)
    assert path.read_bytes() == before


def test_the_padding_a_pipeline_reads_is_stored_apart_when_asked(tmp_path, minilm_tokenizer):
    """CogVideoX hands its transformer T5's padded states: with `padding=True` the cache keeps them apart from the
    real tokens (which alone train dictionaries), each row its prompt's; without it, and on MiniLM, none are
    kept; a resume that asks otherwise than the cache was begun with is refused."""
    from conftest import tiny_cogvideox_pipeline

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    own = PipelineEncoding(tiny_cogvideox_pipeline(minilm_tokenizer), "tiny-cog", max_sequence_length=16)
    prompts, hook = ["a dog", "a French horn player on a quiet stage", "rain"], "text_encoder.blocks.1"
    expected = own.run(prompts, [hook])[hook]
    write_cache(own, prompts, tmp_path / "p.h5", [hook], CacheConfig(batch_size=2, dtype="float32", padding=True),
                progress=False)  # fmt: skip
    with ActivationCache(tmp_path / "p.h5") as cache:
        rows, prompt_index = cache.padding_rows(hook)
        assert cache.n_padding_rows(hook) == len(rows) == int(expected.padding.sum()) > 0
        assert np.array_equal(rows, expected.acts[expected.padding].numpy())
        assert prompt_index.tolist() == expected.padding.nonzero()[:, 0].tolist()
        assert np.array_equal(cache.rows(hook), expected.acts[expected.mask].numpy())  # the real tokens, as before
    write_cache(own, prompts, tmp_path / "r.h5", [hook], CacheConfig(batch_size=2, dtype="float32"), progress=False)
    with ActivationCache(tmp_path / "r.h5") as cache:
        assert len(cache.padding_rows(hook)[0]) == cache.n_padding_rows(hook) == 0
    with pytest.raises(ClearSaeError, match="written with padding=False, this run has True"):
        padded = CacheConfig(batch_size=2, dtype="float32", padding=True)
        write_cache(own, prompts, tmp_path / "r.h5", [hook], padded, resume=True, progress=False)
