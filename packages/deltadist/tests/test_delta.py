"""The delta layer: exactness, bias modes, SVD initialisation, gate, deploy, streaming, surgery."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_model import clips_like, tiny
from torch import nn

from deltadist.delta import (
    DeltaConv,
    DeltaStream,
    convert_to_delta,
    copy_teacher_model,
    delta_layers,
    deploy,
    forward_clip,
    revert_to_teacher,
    set_clip_length,
    student_parameters,
)
from deltadist.students import Gate, SeparableConv, spatial_svd, student_rank


def test_student_rank_rules():
    assert student_rank(32, 32, 4, "out") == 8
    assert student_rank(256, 512, 4, "out") == 128
    assert student_rank(4, 4, 4, "out") == 4  # Cout == f is not reduced under "out"
    assert student_rank(4, 4, 4, "min") == 1  # ... but min(Cin, Cout) == f is under "min"
    assert student_rank(3, 4, 4, "min") == 3
    assert student_rank(512, 64, 16, "min") == 4
    assert student_rank(2, 64, 16, "min") == 2
    with pytest.raises(ValueError, match="reduction must be 'out' or 'min'"):
        student_rank(8, 8, 4, "max")


def test_spatial_svd_full_rank_reproduces_and_truncation_error_is_the_discarded_singular_values():
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    matrix = w.permute(1, 2, 0, 3).reshape(15, 18)
    s = torch.linalg.svdvals(matrix)
    for rank in (15, 20):  # full rank, and beyond it (zero-padded components)
        v, h = spatial_svd(w, rank)
        assert v.shape == (rank, 5, 3, 1) and h.shape == (6, rank, 1, 3)
        product = torch.einsum("rch,orw->ochw", v[..., 0], h[:, :, 0])
        torch.testing.assert_close(product, w, rtol=0, atol=1e-12)
    for rank in (1, 4, 9):
        v, h = spatial_svd(w, rank)
        err = torch.linalg.norm(torch.einsum("rch,orw->ochw", v[..., 0], h[:, :, 0]) - w)
        assert float(err) == pytest.approx(float(s[rank:].square().sum().sqrt()), rel=1e-10)


def test_separable_student_computes_its_product_kernel_with_the_teachers_geometry():
    torch.manual_seed(0)
    teacher = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=True).double()
    student = SeparableConv(teacher, rank=3, bias=True).double()
    student.init_from(teacher)
    x = torch.randn(2, 4, 11, 13, dtype=torch.float64)
    expected = F.conv2d(x, student.product_kernel(), teacher.bias, (2, 1), (1, 2), (1, 2))
    torch.testing.assert_close(student(x), expected, rtol=0, atol=1e-12)
    assert student(x).shape == teacher(x).shape == (2, 6, 6, 9)  # width 13 + 2*2 - 2*(5-1)
    with pytest.raises(ValueError, match="groups == 1"):
        SeparableConv(nn.Conv2d(4, 4, 3, groups=2), 2)


def test_delta_layer_with_exact_students_in_both_bias_modes():
    torch.manual_seed(0)
    teacher = nn.Conv2d(4, 4, 1, bias=True).double()  # 1x1 with rank Cout: the SVD student is exact
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)  # 2 clips x 3 frames
    frames = teacher(x)
    for bias_mode in ("corrected", "original"):
        for student in ("full", "lowrank"):
            layer = DeltaConv(copy.deepcopy(teacher), factor_ch=1, bias_mode=bias_mode).eval()
            layer.clip_length, layer.force = 3, student
            out = layer(x).unflatten(0, (2, 3))
            expected = frames.unflatten(0, (2, 3)).clone()
            if bias_mode == "original":  # the teacher bias once more on every delta frame
                expected[:, 1:] += teacher.bias.view(1, 1, 4, 1, 1)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    corrected = DeltaConv(copy.deepcopy(teacher), bias_mode="corrected")
    original = DeltaConv(copy.deepcopy(teacher), bias_mode="original")
    assert corrected.student_full.bias is None and corrected.student_lowrank.horizontal.bias is None
    torch.testing.assert_close(original.student_full.bias, teacher.bias, rtol=0, atol=0)
    torch.testing.assert_close(original.student_lowrank.horizontal.bias, teacher.bias, rtol=0, atol=0)


def test_converted_model_with_full_students_equals_the_frame_based_model():
    net = tiny()
    teacher_net = copy.deepcopy(net)
    names = convert_to_delta(net)
    assert names == ["body.0", "body.2", "body.5"]
    clips = clips_like()
    expected = teacher_net(clips.flatten(0, 1)).unflatten(0, (2, 3))
    for layer in delta_layers(net).values():
        layer.force = "full"
    torch.testing.assert_close(forward_clip(net, clips), expected, rtol=0, atol=1e-10)
    # the low-rank students (rank 2-4 of 8-16) approximate; keyframes stay exact
    for layer in delta_layers(net).values():
        layer.force = "lowrank"
    out = forward_clip(net, clips)
    torch.testing.assert_close(out[:, 0], expected[:, 0], rtol=0, atol=1e-10)
    assert (out[:, 1:] - expected[:, 1:]).abs().max() > 1e-4
    # the original's double bias on body.0 changes the delta frames
    original = tiny()
    convert_to_delta(original, bias_mode="original")
    for layer in delta_layers(original).values():
        layer.force = "full"
    drift = (forward_clip(original, clips)[:, 1:] - expected[:, 1:]).abs().max()
    assert drift > 1e-2


def test_gate_sampling_and_eval():
    gate = Gate(init_logit=-1.0)
    noise = torch.tensor(1.5, dtype=torch.float32)
    g = gate(noise)
    soft = torch.sigmoid(torch.tensor(0.5) / (2 / 3))
    assert float(g.detach()) == 1.0  # logit + noise = 0.5 > 0: the full-size student
    g.backward()
    assert float(gate.logit.grad) == pytest.approx(float(soft * (1 - soft) / (2 / 3)), rel=1e-6)
    assert float(gate(torch.tensor(0.9)).detach()) == 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([gate() for _ in range(4000)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert float(draws.mean()) == pytest.approx(1 / (1 + math.e), abs=0.03)  # P(1) = sigmoid(-1)
    gate.eval()
    assert float(gate()) == 0.0
    with torch.no_grad():
        gate.logit.fill_(0.0)
        assert float(gate()) == 0.0  # logit 0 is not > 0: low-rank, as the original's choice
        gate.logit.fill_(1e-3)
        assert float(gate()) == 1.0


def test_training_forward_mixes_students_by_the_sampled_gate_and_keeps_the_delta():
    torch.manual_seed(3)
    layer = DeltaConv(nn.Conv2d(4, 8, 3, padding=1).double(), gate_init=0.0).train()
    layer.clip_length = 2
    x = torch.randn(4, 4, 6, 6, dtype=torch.float64)
    seen = set()
    for _ in range(20):
        out = layer(x).unflatten(0, (2, 2))
        dx = (x.unflatten(0, (2, 2))[:, 1] - x.unflatten(0, (2, 2))[:, 0]).contiguous()
        student = layer.student_full if float(layer.gate_value.detach()) == 1.0 else layer.student_lowrank
        torch.testing.assert_close(layer.student_delta, student(dx), rtol=0, atol=1e-12)
        torch.testing.assert_close(out[:, 1] - out[:, 0], student(dx), rtol=0, atol=1e-12)
        seen.add(float(layer.gate_value.detach()))
    assert seen == {0.0, 1.0}
    assert layer.student_delta.shape == (2, 8, 6, 6)


def test_deploy_keeps_the_chosen_student_and_its_outputs():
    net = tiny()
    convert_to_delta(net)
    layers = delta_layers(net)
    with torch.no_grad():
        layers["body.2"].gate.logit.fill_(0.5)
    clips = clips_like()
    before = forward_clip(net, clips)
    assert deploy(net) == {"body.0": "lowrank", "body.2": "full", "body.5": "lowrank"}
    torch.testing.assert_close(forward_clip(net, clips), before, rtol=0, atol=0)
    keys = [k for k in net.state_dict() if k.startswith("body.2.")]
    assert keys == ["body.2.teacher.weight", "body.2.student.weight"]
    assert "body.0.student.vertical.weight" in net.state_dict()
    assert not any("gate" in k or "student_" in k for k in net.state_dict())


def test_streaming_equals_batched_clips():
    net = tiny(dtype=torch.float32)
    convert_to_delta(net)
    with torch.no_grad():
        delta_layers(net)["body.5"].gate.logit.fill_(1.0)
    video = clips_like(b=2, t=7, dtype=torch.float32)  # 2 streams, 7 frames: clips of 3, 3, 1
    with torch.no_grad():
        stream = DeltaStream(net, keyframe_interval=3)
        streamed = torch.stack([stream(video[:, t]) for t in range(7)], 1)
        batched = torch.cat([forward_clip(net, video[:, s : s + 3]) for s in (0, 3, 6)], 1)
    torch.testing.assert_close(streamed, batched, rtol=1e-5, atol=1e-5)
    assert all(layer.clip_length == 1 and not layer._stream_on for layer in delta_layers(net).values())
    set_clip_length(net, 2)  # forward_clip leaves the layers' clip length as it found it
    forward_clip(net, video[:, :3])
    assert all(layer.clip_length == 2 for layer in delta_layers(net).values())
    with pytest.raises(ValueError, match="differs from its keyframe"):
        stream.index = 1
        stream(video[:1, 0])


def test_surgery_round_trip_and_rules():
    net = tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    names = convert_to_delta(net, exclude=["body.5"])
    assert names == ["body.0", "body.2"]
    assert delta_layers(net)["body.0"].teacher is convs["body.0"]
    assert "body.0.teacher.weight" in net.state_dict() and "body.0.weight" not in net.state_dict()
    twin = copy_teacher_model(net)
    assert not delta_layers(twin) and delta_layers(net)
    students = {id(p) for p in student_parameters(net)}
    named = {n for n, p in net.named_parameters() if id(p) in students}
    assert named == {
        f"body.{i}.{part}"
        for i in (0, 2)
        for part in (
            "student_full.weight",
            "student_lowrank.vertical.weight",
            "student_lowrank.horizontal.weight",
            "gate.logit",
        )
    }
    assert revert_to_teacher(net) == ["body.0", "body.2"]
    assert net.body[0] is convs["body.0"] and net.body[2] is convs["body.2"]
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert convert_to_delta(net, skip_first=0, skip_last=0) == ["stem", "body.0", "body.2", "body.5", "head"]
    with pytest.raises(ValueError, match=r"selects no Conv2d of Tiny, which has 5"):
        convert_to_delta(tiny(), include=["body.*"], skip_first=2, skip_last=1)
    with pytest.raises(ValueError, match=r"already has 5 delta layers \(e.g. 'stem'\); revert_to_teacher"):
        convert_to_delta(net)
    grouped = tiny()
    grouped.body[2] = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    with pytest.raises(ValueError, match=r"cannot convert 'body.2': .*groups == 1.*exclude=\['body.2'\]"):
        convert_to_delta(grouped)
    with pytest.raises(ValueError, match="not a whole number of 2-frame clips"):
        layer = DeltaConv(nn.Conv2d(3, 3, 1))
        layer.clip_length = 2
        layer(torch.randn(3, 3, 4, 4))
