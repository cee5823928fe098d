"""The benchmark scripts run end to end at tiny sizes and write ratios that agree with their own measurements.

Benchmarks are the `slow` tier (`pytest --runslow`); the GPU script's CPU smoke run is quick and stays in the
default run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{script}.json"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / f"{script}.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["machine"]["torch_threads"] >= 1
    return record


@pytest.mark.slow  # a benchmark: the `slow` tier
def test_training_benchmark_compares_three_trainers_in_one_run(tmp_path):
    record = run_benchmark(
        "training",
        tmp_path,
        "--tokens",
        "4096",
        "--prompts",
        "200",
        "--d-sae",
        "768",
        "--scaling",
        "--expansions",
        "1",
        "2",
        "--scaling-repeats",
        "1",
    )
    runs = {r["trainer"]: r for r in record["runs"]}
    assert set(runs) == {"sae-lens SAETrainer", "clear_sae (sparse)", "clear_sae (autograd)"}
    reference = runs["sae-lens SAETrainer"]["tokens_per_s"]
    for run in runs.values():
        assert run["vs_sae_lens"] == pytest.approx(run["tokens_per_s"] / reference)
        assert 0.0 < run["explained_variance"] <= 1.0
        assert run["l0"] == pytest.approx(32.0)
    # The two clear_sae kernels train the same model on the same stream: same quality.
    assert runs["clear_sae (sparse)"]["explained_variance"] == pytest.approx(
        runs["clear_sae (autograd)"]["explained_variance"], abs=1e-3
    )
    assert record["roofline"]["gflops"] > 0
    assert [r["d_sae"] for r in record["scaling"]] == [384, 768]
    for row in record["scaling"]:
        assert row["speedup_vs_sae_lens"] == pytest.approx(row["sae_lens_ms"] / row["sparse_ms"])


@pytest.mark.slow  # a benchmark: the `slow` tier
def test_caching_benchmark_reports_overhead_and_reader_headroom(tmp_path):
    record = run_benchmark(
        "caching", tmp_path, "--prompts", "128", "--pairs", "3", "--scaling", "32", "64", "--train-steps", "3"
    )
    caching = record["caching"]
    assert caching["overhead_min"] <= caching["overhead"] <= caching["overhead_max"]
    assert caching["file_mb"] > 0
    reader = record["reading"][0]["tokens_per_s"]
    for row in record["reading"][1:]:
        assert row["reader_headroom"] == pytest.approx(reader / row["tokens_per_s"])
    assert [g["prompts"] for g in record["growth"]] == [32, 64]


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    record = run_benchmark(
        "gpu_training",
        tmp_path,
        "--device",
        "cpu",
        "--d-in",
        "64",
        "--d-sae",
        "512",
        "--k",
        "8",
        "--batch",
        "256",
        "--steps",
        "2",
    )
    assert [r["kernel"] for r in record["kernels"]] == ["dense", "sparse", "autograd"]
    counted = 4 * 256 * 64 * 512
    for row in record["kernels"]:
        fraction = counted / (row["step_ms"] / 1e3) / (record["rates"]["peak_tflops_used"] * 1e12)
        assert row["fraction_of_matmul_peak"] == pytest.approx(fraction, rel=1e-6)


def test_real_size_benchmark_smoke_run_on_cpu(tmp_path):
    """The GPU check at real size, run at its tiny scale: every stage runs and its figures agree with each other."""
    record = run_benchmark("real_size", tmp_path, "--scale", "tiny", "--device", "cpu")
    caching, training, clamp = record["caching"], record["training"], record["clamp"]
    assert caching["cache_over_encode_ratio"] == pytest.approx(
        caching["cache_prompts_per_s"] / caching["encode_prompt_prompts_per_s"], rel=1e-9
    )
    assert training["d_sae"] == 4 * 32 and training["tokens_per_s"] == pytest.approx(
        training["tokens"] / training["seconds"], rel=1e-9
    )
    assert record["learning"]["pairs"] == 20 and record["learning"]["seconds"] > 0
    assert clamp["clamp_share_of_generation"] == pytest.approx(
        max(0.0, clamp["encode_prompt_erased_s"] - clamp["encode_prompt_s"]) / clamp["generation_s"], rel=1e-9
    )
    assert record["hook_point"] == "text_encoder.blocks.1"


def test_pipeline_caching_benchmark_smoke_run(tmp_path):
    """Caching through a pipeline's encoding against encode_prompt alone, at a tiny size: one hook point and
    every hook point of the encoder, each with its median ratio inside the pairs' range."""
    record = run_benchmark(
        "pipeline_caching", tmp_path, "--prompts", "64", "--pairs", "3", "--layers", "2", "--max-sequence-length", "16"
    )
    assert [row["hook_points"] for row in record["caching"]] == [1, 3]  # the embedding and two blocks
    for row in record["caching"]:
        assert row["overhead_min"] <= row["overhead"] <= row["overhead_max"]
    assert record["encoder"]["num_layers"] == 2 and record["probe_s"] > 0


@pytest.mark.slow  # a benchmark: the `slow` tier
def test_erasure_benchmark_times_the_clamp_and_a_new_concept(tmp_path):
    record = run_benchmark("erasure", tmp_path, "--clips", "2", "--repeats", "1")
    generation = record["generation"]
    assert generation["tokens_edited_last_run"] > 0  # the clamp really acted on the prompts
    assert generation["overhead_end_to_end"] == pytest.approx(
        generation["generate_with_clamp_s"] / generation["generate_s"] - 1
    )
    concept = record["new_concept"]
    assert concept["layer"].startswith("text_encoder.") and concept["latents"] > 0
    assert 0 < concept["learn_concept_s"] < concept["cli_command_s"]


@pytest.mark.slow  # a benchmark: the `slow` tier
def test_distributed_training_benchmark_times_every_way_and_reports_ratios_to_one_process(tmp_path):
    record = run_benchmark("distributed_training", tmp_path, "--prompts", "120", "--tokens", "2048", "--repeats", "1")
    rows = {r["way"]: r for r in record["rows"]}
    assert set(rows) == {
        "one process",
        "one process, one thread",
        "2 ranks, a layer each",
        "2 ranks, data-parallel",
        "2 ranks, start-up only",
    }
    alone = rows["one process"]["median_s"]
    for name, row in rows.items():
        assert row["ratio_to_one_process"] == pytest.approx(row["median_s"] / alone)
        assert row["min_s"] <= row["median_s"] <= row["max_s"] and record["seconds"][name] == [row["median_s"]]
