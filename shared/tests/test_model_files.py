"""Model files: one reader for ours, engine checkpoints and the authors' (through converters)."""

from __future__ import annotations

import argparse
import collections

import pytest
import torch
from torch import nn

from effvid.checkpoint import CheckpointMismatchError
from effvid.model_files import (
    ModelFileError,
    load_weights,
    read_model_file,
    read_state_dict,
    read_torch_file,
    register_converter,
    save_model,
)


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_save_and_load_our_model_file(tmp_path):
    model = small()
    save_model(model, tmp_path / "model.pt", kind="toy", config="a: 1\n")
    read = read_model_file(tmp_path / "model.pt", kind="toy")
    assert read.config == "a: 1\n" and read.state_dict.keys() == model.state_dict().keys()
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_weights(other, tmp_path / "model.pt", kind="toy")
    assert torch.equal(other[0].weight, model[0].weight)
    with pytest.raises(
        ModelFileError, match=r"model\.pt: is a effvid-toy-v1 file, not an effvid frameexit model"
    ):
        read_model_file(tmp_path / "model.pt", kind="frameexit")
    with pytest.raises(CheckpointMismatchError, match="2 missing"):
        load_weights(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)),
            tmp_path / "model.pt",
            kind="toy",
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty \(expected an effvid toy model file"),
        (b"hello, this is text\n", r"not a PyTorch file"),
        (bytes(range(256)) * 4, r"not a PyTorch file \(neither a zip archive nor a pickle"),
    ],
)
def test_bad_files_name_the_file_and_what_was_expected(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=rf"bad\.pt: .*{message}") as info:
        read_model_file(path, kind="toy")
    assert "weights_only=False" not in str(info.value)


def test_truncated_file(tmp_path):
    save_model(small(), tmp_path / "model.pt", kind="toy", config="")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.pt: truncated or corrupt"):
        read_model_file(tmp_path / "cut.pt", kind="toy")
    with pytest.raises(ModelFileError, match=r"nope\.pt: file not found \(expected"):
        read_model_file(tmp_path / "nope.pt", kind="toy")


def test_pickled_objects_are_refused_without_torch_advice(tmp_path):
    torch.save(
        {"state_dict": collections.OrderedDict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "obj.pt"
    )
    with pytest.raises(
        ModelFileError, match=r"obj\.pt: holds Python objects other than tensors .*Namespace"
    ) as info:
        read_torch_file(tmp_path / "obj.pt", expected="weights")
    assert "weights_only" not in str(info.value)


def test_nonfinite_weights_are_refused_naming_the_tensor(tmp_path):
    model = small()
    with torch.no_grad():
        model[1].running_var[2] = float("nan")
    with pytest.raises(ModelFileError, match=r"tensor '1\.running_var' holds non-finite values"):
        save_model(model, tmp_path / "model.pt", kind="toy", config="")
    assert not (tmp_path / "model.pt").exists()
    torch.save({"format": "effvid-toy-v1", "state_dict": model.state_dict(), "config": ""}, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=r"m\.pt: tensor '1\.running_var' holds non-finite"):
        read_model_file(tmp_path / "m.pt", kind="toy")


def test_converters_and_prefixes(tmp_path):
    @register_converter("toy", "theirs")
    def convert(state):
        return {k.replace("net.", ""): v for k, v in state.items()}

    model = small()
    torch.save(
        {"state_dict": {f"module.net.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "t.pth"
    )
    assert all(k.startswith("net.") for k in read_state_dict(tmp_path / "t.pth", strip_prefix="module."))
    with pytest.raises(ModelFileError, match=r"key 'module\.net\.0\.weight' lacks the expected prefix 'x\.'"):
        read_state_dict(tmp_path / "t.pth", strip_prefix="x.")
    torch.save({f"net.{k}": v for k, v in model.state_dict().items()}, tmp_path / "plain.pth")
    other = small()
    load_weights(other, tmp_path / "plain.pth", kind="toy", fmt="theirs")
    with pytest.raises(KeyError, match=r"unknown checkpoint converter 'toy/mine'.*Valid: .*toy/theirs"):
        load_weights(other, tmp_path / "plain.pth", kind="toy", fmt="mine")
    with pytest.raises(
        ModelFileError, match=r"plain\.pth: is not an effvid toy model file .*--checkpoint\.format \(theirs\)"
    ):
        load_weights(other, tmp_path / "plain.pth", kind="toy")
    # one of our files under an authors' format would be converted a second time: refused by name
    save_model(model, tmp_path / "ours.pt", kind="toy", config="")
    with pytest.raises(
        ModelFileError,
        match=r"ours\.pt: is an effvid model file \(effvid-toy-v1\), not an authors' toy checkpoint in the "
        r"'theirs' layout; load it with --checkpoint\.format effvid",
    ):
        load_weights(other, tmp_path / "ours.pt", kind="toy", fmt="theirs")
