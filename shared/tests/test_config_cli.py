"""Config and CLI behaviour, driven through the real Fire entry (fire.Fire(fn, command=[...]))."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import fire
import pytest
import yaml

from effvid.cli import build_command, run_cli
from effvid.config import MISSING, ConfigError, RunConfig, load_config, option


@dataclasses.dataclass
class Data:
    path_frame: str = option(MISSING, "root folder of the frame directories")
    num_workers: int = option(0, "DataLoader worker processes")
    order: list[int] = option(doc="frame processing order", default_factory=lambda: [5, 0, 9])


@dataclasses.dataclass
class Model:
    num_class: int = option(200, "number of classes")
    first_threshold: float = option(0.99, "exit at step 0 above this confidence")
    name: str = option("resnet50", "backbone name")


@dataclasses.dataclass
class Schema(RunConfig):
    data: Data = option(doc="data options", default_factory=Data)
    model: Model = option(doc="model options", default_factory=Model)
    name: str = option("run", "a top-level field sharing its leaf name with model.name")


@pytest.fixture
def calls():
    return []


@pytest.fixture
def command(calls):
    def run(cfg: Schema, run_dir: Path) -> None:
        calls.append((cfg, run_dir))

    return build_command(run, Schema, name="toy-cmd", doc="A toy command for tests.")


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_files_merge_left_to_right_then_overrides(tmp_path, command, calls):
    a = write_yaml(
        tmp_path / "a.yml", {"data": {"path_frame": "/a", "num_workers": 2}, "model": {"num_class": 10}}
    )
    b = write_yaml(tmp_path / "b.yml", {"data": {"path_frame": "/b"}})
    out = tmp_path / "run"
    fire.Fire(command, command=[a, b, "--model.num_class", "101", "--output_dir", str(out)])
    ((cfg, run_dir),) = calls
    assert cfg.data.path_frame == "/b"  # b.yml wins over a.yml
    assert cfg.data.num_workers == 2  # kept from a.yml
    assert cfg.model.num_class == 101  # command line wins over both
    assert run_dir == out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["num_class"] == 101 and saved["data"]["path_frame"] == "/b"
    assert saved["output_dir"] == str(out)


def test_numeric_text_stays_a_string_for_a_string_field(tmp_path, command, calls):
    fire.Fire(command, command=["--data.path_frame", "2021", "--output_dir", str(tmp_path / "r")])
    ((cfg, _),) = calls
    assert cfg.data.path_frame == "2021" and isinstance(cfg.data.path_frame, str)


def test_values_are_coerced_to_the_schema_type(tmp_path, command, calls):
    fire.Fire(
        command,
        command=[
            "--data.path_frame",
            "x",
            "--model.first_threshold",
            "1",
            "--data.order",
            "[1,2]",
            "--output_dir",
            str(tmp_path / "r"),
        ],
    )
    ((cfg, _),) = calls
    assert cfg.model.first_threshold == 1.0 and isinstance(cfg.model.first_threshold, float)
    assert cfg.data.order == [1, 2]


def test_wrong_type_is_an_error_naming_the_key(command):
    with pytest.raises(ConfigError, match=r"command line: invalid value for 'model\.num_class'.*'abc'"):
        fire.Fire(command, command=["--data.path_frame", "x", "--model.num_class", "abc"])


def test_unknown_key_suggests_close_match(command):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'data\.pathframe'\. Did you mean 'data\.path_frame'\?"
    ):
        fire.Fire(command, command=["--data.pathframe", "x"])


def test_bare_leaf_key_never_updates_nested_matches(command, calls):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'num_class'\. Did you mean 'model\.num_class'\?"
    ):
        fire.Fire(command, command=["--data.path_frame", "x", "--num_class", "101"])
    assert calls == []


def test_top_level_key_updates_only_itself(tmp_path, command, calls):
    fire.Fire(
        command, command=["--data.path_frame", "x", "--name", "foo", "--output_dir", str(tmp_path / "r")]
    )
    ((cfg, _),) = calls
    assert cfg.name == "foo" and cfg.model.name == "resnet50"


def test_unknown_key_in_yaml_names_the_file(tmp_path, command):
    bad = write_yaml(tmp_path / "bad.yml", {"model": {"num_clas": 3}})
    with pytest.raises(
        ConfigError, match=r"bad\.yml: unknown config key 'model\.num_clas'\. Did you mean 'model\.num_class'"
    ):
        fire.Fire(command, command=[bad])


def test_wrong_type_in_yaml_names_the_file(tmp_path, command):
    bad = write_yaml(tmp_path / "bad.yml", {"data": {"num_workers": "many"}})
    with pytest.raises(ConfigError, match=r"bad\.yml: invalid value for 'data\.num_workers'"):
        fire.Fire(command, command=[bad])


def test_section_replaced_by_scalar_is_an_error(command):
    with pytest.raises(ConfigError, match=r"invalid value for 'data'"):
        fire.Fire(command, command=["--data", "3"])


def test_missing_config_file_and_non_mapping_yaml(tmp_path, command):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yml"):
        fire.Fire(command, command=[str(tmp_path / "nope.yml")])
    listy = tmp_path / "list.yml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yml: expected a mapping"):
        fire.Fire(command, command=[str(listy)])


def test_required_key_left_unset(command):
    with pytest.raises(ConfigError, match=r"required config key 'data\.path_frame' is not set"):
        fire.Fire(command, command=[])


def test_help_lists_every_option_with_type_default_and_doc(command, calls, capsys):
    fire.Fire(command, command=["--help"])
    out = capsys.readouterr().out
    assert calls == []
    assert "usage: toy-cmd" in out and "A toy command for tests." in out
    assert "--data.path_frame  str  (required)  root folder of the frame directories" in out
    assert "--model.first_threshold  float  (default: 0.99)  exit at step 0 above this confidence" in out
    assert "--data.order  list[int]  (default: [5, 0, 9])  frame processing order" in out
    assert "--output_dir  str | None  (default: None)" in out
    assert "--print_config" in out


def test_print_config_prints_resolved_yaml_and_does_not_run(tmp_path, command, calls, capsys):
    fire.Fire(command, command=["--data.path_frame", "2021", "--print_config"])
    out = capsys.readouterr().out
    assert calls == []
    assert yaml.safe_load(out)["data"]["path_frame"] == "2021"
    assert not Path("runs").exists() or not any(Path("runs").glob("toy-cmd-*"))


def test_default_run_dir_is_timestamped_under_runs(tmp_path, monkeypatch, command, calls):
    monkeypatch.chdir(tmp_path)
    fire.Fire(command, command=["--data.path_frame", "x"])
    fire.Fire(command, command=["--data.path_frame", "y"])
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(dirs) == 2 and all(d.startswith("toy-cmd-") for d in dirs)
    assert calls[0][1] != calls[1][1]
    for _, run_dir in calls:
        assert (run_dir / "config.yaml").is_file()


def test_hyphenated_keys_read_as_underscores():
    cfg = load_config(Schema, [], {"data.path-frame": "p", "model.first-threshold": 0.5})
    assert cfg.data.path_frame == "p" and cfg.model.first_threshold == 0.5


def test_run_cli_turns_config_errors_into_exit_code_2(command, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(command, name="toy-cmd", argv=["--model.num_clas", "3"])
    assert info.value.code == 2
    assert "toy-cmd: error: command line: unknown config key 'model.num_clas'" in capsys.readouterr().err


def test_schema_must_subclass_run_config():
    @dataclasses.dataclass
    class NoRun:
        x: int = 1

    with pytest.raises(TypeError, match="RunConfig"):
        build_command(lambda cfg, run_dir: None, NoRun, name="bad", doc="")
