"""The CLI's flags are generated from the config dataclasses; --config, --version, python -m, exit codes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from clear_sae.cache import CacheConfig
from clear_sae.calibration.ladder import CalibrationConfig
from clear_sae.cli import DOMAIN_ERROR, USAGE_ERROR, build_parser, main, subcommands
from clear_sae.cli.commands import cache, concept, demo, evaluate, inspect, train
from clear_sae.cli.demo import DemoConfig
from clear_sae.cli.options import flag_of
from clear_sae.cli.report import InspectConfig
from clear_sae.concepts import ConceptConfig
from clear_sae.config import field_docs
from clear_sae.dictionary import TrainConfig
from clear_sae.toyworld.sampling import EvalConfig

GENERATED = [
    ("cache", CacheConfig, cache.FIELDS, {}),
    ("train", TrainConfig, train.FIELDS, {"architecture": "--arch"}),
    ("concept", ConceptConfig, concept.CONCEPT_FIELDS, {}),
    ("concept", CalibrationConfig, concept.CALIBRATION_FIELDS, {}),
    ("evaluate", EvalConfig, evaluate.FIELDS, {}),
    ("inspect", InspectConfig, inspect.FIELDS, {}),
    ("demo", DemoConfig, demo.FIELDS, {}),
]


def option(command: str, flag: str):
    parser = subcommands(build_parser())[command]
    return next(a for a in parser._actions if flag in a.option_strings)


@pytest.mark.parametrize("command,cls,names,flags", GENERATED, ids=[f"{g[0]}-{g[1].__name__}" for g in GENERATED])
def test_help_is_each_fields_docstring_and_its_default(command, cls, names, flags, capsys):
    docs = field_docs(cls)
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in names:
        flag = flags.get(name, flag_of(name))
        action = option(command, flag)
        assert action.dest == name
        assert docs[name].split(". ")[0] in " ".join((action.help % vars(action)).split()), name
        field = defaults[name]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert action.default == default, name
        assert flag in shown and "(default:" in shown


def test_every_option_has_help():
    for name, parser in subcommands(build_parser()).items():
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings} has no help"


def test_a_value_out_of_a_fields_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["concept", "--name", "x", "--target", "t", "--nontarget", "n", "--library", "l", "--holdout", "1.5"])
    assert exit_info.value.code == USAGE_ERROR
    assert "between 0 and 1" in capsys.readouterr().err


def test_a_domain_error_exits_3_with_one_line(tmp_path, capsys):
    code = main(
        ["cache", "--model", "minilm", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "c.h5")]
    )
    err = capsys.readouterr().err
    assert code == DOMAIN_ERROR == 3 and len(err.strip().splitlines()) == 1 and err.startswith("clear-sae: error:")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_gives_defaults_that_flags_override(tmp_path, suffix, monkeypatch):
    seen = []
    import clear_sae.cli.demo

    monkeypatch.setattr(clear_sae.cli.demo, "run_demo", seen.append)
    values = {"tokens": 4096, "batch-size": 128, "toy_clips": 0, "out": str(tmp_path / "d")}
    path = tmp_path / f"demo{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else "\n".join(f"{k}: {v}" for k, v in values.items()))
    assert main(["demo", "--config", str(path)]) == 0
    assert (seen[-1].tokens, seen[-1].batch_size, seen[-1].toy_clips) == (4096, 128, 0)
    assert main(["demo", "--config", str(path), "--tokens", "8192"]) == 0
    assert (seen[-1].tokens, seen[-1].batch_size) == (8192, 128)


def test_config_file_can_give_a_required_option(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(evaluate, "run", seen.append)
    subcommands(build_parser())["evaluate"].set_defaults(run=seen.append)
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"out": str(tmp_path / "e_out.json"), "clips": 7}))
    from clear_sae.cli import parse

    args = parse(["evaluate", "--config", str(path)])
    assert args.out == str(tmp_path / "e_out.json") and args.clips == 7


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"tokenz": 5}', "has no option 'tokenz'"),
        ('{"tokens": -5}', "must be at least 1"),
        ("[1, 2]", "must hold a mapping"),
        ("{not json", "is not valid JSON"),
    ],
    ids=["unknown-key", "out-of-range", "not-a-mapping", "malformed"],
)
def test_a_bad_config_file_is_a_one_line_domain_error(tmp_path, content, message, capsys):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["demo", "--config", str(path)]) == DOMAIN_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_version_and_python_dash_m():
    from clear_sae import __version__

    out = subprocess.run([sys.executable, "-m", "clear_sae", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"clear-sae {__version__}"
    help_text = subprocess.run([sys.executable, "-m", "clear_sae", "--help"], capture_output=True, text=True).stdout
    assert "toy-concept" in help_text and "Exit status" in help_text


def test_quiet_keeps_status_lines_off_stdout(tmp_path, capsys, monkeypatch):
    import clear_sae.cli.demo
    from clear_sae.cli.options import log

    monkeypatch.setattr(clear_sae.cli.demo, "run_demo", lambda cfg: log.info("status line"))
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    assert "status line" in capsys.readouterr().out
    assert main(["--quiet", "demo", "--out", str(tmp_path / "d")]) == 0
    assert "status line" not in capsys.readouterr().out
