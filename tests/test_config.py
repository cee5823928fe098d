"""Field ranges and docstrings of the config dataclasses, and the rules the CLI calls (overwrite, seeds, names)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from clear_sae.config import COUNT, POSITIVE, SHARE, at_most, check_fields, check_memory, check_value, field_docs
from clear_sae.errors import ClearSaeError
from clear_sae.io import check_overwrite, is_earlier_output
from clear_sae.toyworld.concepts import check_toy_names
from clear_sae.toyworld.protocol import CALIBRATION_SEED, EVAL_SEED, LEARN_SEED, check_evaluation_seed


@pytest.mark.parametrize(
    "value,check,message",
    [
        (0, "positive", "at least 1"),
        (-1, "count", "at least 0"),
        (1.5, "share", "between 0 and 1"),
        (0.0, "above_zero", "above 0"),
        (-0.5, "at_least_zero", "at least 0"),
        (float("nan"), "share", "finite"),
        (float("inf"), "above_zero", "finite"),
        (2.5, "positive", "not an integer"),
        (True, "count", "not an integer"),
        (0.0, "strength", "above 0 and at most 100"),
        (100.5, "strength", "above 0 and at most 100"),
    ],
    ids=[
        "positive-0",
        "count-negative",
        "share-above-1",
        "above-zero-0",
        "at-least-zero-negative",
        "nan",
        "inf",
        "float-for-int",
        "bool-for-int",
        "strength-0",
        "strength-above-100",
    ],
)
def test_a_value_out_of_range_is_refused(value, check, message):
    with pytest.raises(ClearSaeError, match=message):
        check_value(value, check)


@pytest.mark.parametrize(
    "value,check",
    [(1, "positive"), (0, "count"), (0.0, "share"), (1.0, "share"), (3, "above_zero"), (100.0, "strength")],
)
def test_a_value_in_range_passes_unchanged(value, check):
    assert check_value(value, check) == value


@dataclass
class Example:
    size: int = field(default=1, metadata=POSITIVE)
    """How many."""
    spare: int = field(default=0, metadata=at_most(10, COUNT))
    rate: float = field(default=0.5, metadata=SHARE)
    """A share,
    over two lines."""

    def __post_init__(self) -> None:
        check_fields(self)


def test_check_fields_names_the_field():
    with pytest.raises(ClearSaeError, match=r"Example.rate must be a share"):
        Example(rate=2.0)
    with pytest.raises(ClearSaeError, match=r"Example.spare must be at most 10, not 11"):
        Example(spare=11)
    assert Example(size=3, spare=10).size == 3


def test_work_beyond_the_memory_available_is_refused_with_the_estimate(monkeypatch):
    import clear_sae.config

    monkeypatch.setattr(clear_sae.config, "available_memory", lambda: 2 * 2**30)
    with pytest.raises(ClearSaeError, match=r"the job needs about 3.0 GiB of memory and 2.0 GiB is available; lower"):
        check_memory(3 * 2**30, "the job", "lower --size")
    check_memory(2 * 2**30, "the job", "lower --size")
    monkeypatch.setattr(clear_sae.config, "available_memory", lambda: None)  # a machine that cannot tell
    check_memory(2**60, "the job", "lower --size")


def test_field_docs_reads_the_docstring_under_each_field():
    assert field_docs(Example) == {"size": "How many.", "rate": "A share, over two lines."}


@pytest.mark.parametrize(
    "content,same_kind",
    [
        (json.dumps({"format": "clear_sae.erase_report", "x": 1}), True),
        (json.dumps({"format": "clear_sae.toy_evaluation"}), False),
        ('<!DOCTYPE html>\n<html><head><meta name="generator" content="clear_sae.erase_report"></head>', True),
        ('<html><meta name="clear_sae.erase_report">', False),
        ("notes: clear_sae.erase_report is the format string of erase reports\n", False),
        ("<!DOCTYPE html><html><head></head><body>clear_sae.erase_report</body>", False),
        ("prompt one\nprompt two\n", False),
        ("{broken json", False),
    ],
    ids=[
        "same-json",
        "other-json",
        "same-html",
        "html-naming-the-format",
        "text-naming-the-format",
        "html-body-naming-it",
        "text",
        "broken-json",
    ],
)
def test_only_an_earlier_report_of_the_same_kind_is_overwritten(tmp_path, content, same_kind):
    out = tmp_path / "out.json"
    out.write_text(content)
    assert is_earlier_output(out, "clear_sae.erase_report") is same_kind
    if same_kind:
        check_overwrite(out, "clear_sae.erase_report", force=False)
    else:
        with pytest.raises(ClearSaeError, match="exists and is not an erase report"):
            check_overwrite(out, "clear_sae.erase_report", force=False)
        check_overwrite(out, "clear_sae.erase_report", force=True)
    assert out.read_text() == content


@pytest.mark.parametrize(
    "seed,message",
    [(LEARN_SEED, "learned from"), (CALIBRATION_SEED, "calibration judged"), (-3, "negative")],
    ids=["learning", "calibration", "negative"],
)
def test_an_evaluation_never_reads_learning_or_calibration_seeds(seed, message):
    with pytest.raises(ClearSaeError, match=message):
        check_evaluation_seed(seed)
    check_evaluation_seed(EVAL_SEED)


@pytest.mark.parametrize(
    "names,attributes,message",
    [
        (["mauve"], {}, "is not a toy-world concept"),
        (["red"], {"crimson": "colour=red"}, "names a concept this run does not take"),
        (["crimson"], {"crimson": "colour=mauve"}, "is not a toy-world attribute"),
    ],
    ids=["unknown-name", "unused-mapping", "unknown-attribute"],
)
def test_toy_names_are_checked_before_anything_loads(names, attributes, message):
    with pytest.raises(ClearSaeError, match=message):
        check_toy_names(names, attributes)
    check_toy_names(["red", "crimson"], {"crimson": "colour=red"})


def test_the_sealed_protocols_test_seeds_are_read_by_the_final_run_only(monkeypatch):
    """A test seed is refused to any run but the final one, which reads nothing else; the digest names the
    protocol: equal for the same declaration, different once a held-out template changes."""
    from clear_sae.toyworld import captions, protocol

    test_seed = protocol.TEST_SEEDS[0]
    with pytest.raises(ClearSaeError, match="test seed of the sealed protocol"):
        check_evaluation_seed(test_seed)
    check_evaluation_seed(test_seed, final=True, reserved_clips=100)
    with pytest.raises(ClearSaeError, match="reserved paraphrases"):
        check_evaluation_seed(EVAL_SEED, reserved_clips=1)
    for seed in (EVAL_SEED, 5):  # a development seed, or any seed outside the declared sets
        assert protocol.seed_split(seed) == "development"
        with pytest.raises(ClearSaeError, match="--final reads the sealed test seeds only"):
            check_evaluation_seed(seed, final=True)
    assert protocol.protocol_record(test_seed, True)["split"] == "test"
    digest = protocol.protocol_digest()
    assert digest == protocol.protocol_digest() and len(digest) == 16
    monkeypatch.setattr(captions, "ONE_OBJECT_TEMPLATES", [*captions.ONE_OBJECT_TEMPLATES[:-1], "{a_obj} {motion}"])
    assert protocol.protocol_digest() != digest


@pytest.mark.parametrize(
    ("cores", "busy", "threads"), [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.9, 1), (2, 6.0, 1), (8, 3.2, 5)]
)
def test_threads_fit_the_cores_other_work_leaves_free(cores, busy, threads):
    from clear_sae.config import threads_for

    assert threads_for(cores, busy) == threads


def test_thread_fitting_leaves_a_users_setting_and_a_quiet_machine_alone(monkeypatch):
    import clear_sae.config as config

    monkeypatch.setattr(config, "usable_cores", lambda: 2)
    monkeypatch.setattr(config, "busy_cores", lambda: 1.5)
    chosen = {"MKL_NUM_THREADS": "2"}
    assert config.fit_threads(chosen) is None and chosen == {"MKL_NUM_THREADS": "2"}
    busy: dict[str, str] = {}
    assert config.fit_threads(busy) == (1, 1.5)
    assert busy == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    monkeypatch.setattr(config, "busy_cores", lambda: 0.3)
    quiet: dict[str, str] = {}
    assert config.fit_threads(quiet) is None and quiet == {}


def test_the_command_line_on_a_busy_machine_says_so_and_torch_takes_the_free_cores(tmp_path):
    """Both cores busy with other work (as the CPU counters would say): the command states it and torch, imported
    after, runs one thread."""
    import subprocess
    import sys

    argv = ["erase", "--library", str(tmp_path / "none.json"), "--concept", "x", "--prompts", "p", "--out", "o.json"]
    script = (
        "import clear_sae.config as config\n"
        "config.usable_cores = lambda: 2\n"
        "config.busy_cores = lambda window=0.2: 2.0\n"
        "from clear_sae.cli import main\n"
        f"status = main({argv!r})\n"
        "import torch\n"
        "print(status, torch.get_num_threads())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.splitlines()[-1].split() == ["3", "1"], done.stderr[-2000:]
    assert "2.0 of 2 cores are busy with other work: torch uses 1 thread(s)" in done.stdout + done.stderr
