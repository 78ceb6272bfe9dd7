"""The authors' checkpoint layouts load strictly and reproduce the original's outputs and choices."""

from __future__ import annotations

import copy

import pytest
import torch
from original_reference import (
    OriginalDeltaConv,
    convert_original,
    original_init_from_frame_based,
    randomise,
    set_original_T,
)

from deltadist.conversion import (
    load_frame_based_state_dict,
    load_original_checkpoint,
    load_original_state_dict,
)
from deltadist.delta import convert_to_delta, delta_layers, set_clip_length
from deltadist.models import get_model
from effvid.checkpoint import CheckpointMismatchError

FRAMES = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(5))
CLIP = torch.cat(
    [FRAMES, FRAMES + 0.1 * torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(6))]
)


@pytest.fixture(scope="module")
def original():
    """DDRNet-23-slim converted the original's way, random weights and gate logits of both signs, in eval."""
    ref = get_model("ddrnet23_slim")
    convert_original(ref)
    randomise(ref, seed=0).eval()
    state = {f"model.{k}": v.clone() for k, v in ref.state_dict().items()}
    state["loss.criterion.weight"] = torch.rand(19)  # the training wrapper saves its loss too
    return ref, state


def _run(model, t, original_model=False):
    if original_model:
        set_original_T(model, t)
    else:
        set_clip_length(model, t)
    with torch.no_grad():
        return model(CLIP[:t])


def _ours(**kwargs):
    net = get_model("ddrnet23_slim")
    convert_to_delta(net, bias_mode="original", **kwargs)
    return net.eval()


def test_training_layout_converts_and_matches_teacher_delta_students_and_gates(original, tmp_path):
    ref, state = original
    # the documented 547 training-layout keys (+ the loss weight), and g_W aliases
    assert len([k for k in state if ".g_W." not in k]) == 547 + 1 and len(state) > 548
    ours = _ours()
    torch.save(state, tmp_path / "ddrnet-23s.pth")
    load_original_checkpoint(ours, tmp_path / "ddrnet-23s.pth")
    ref_layers = {n: m for n, m in ref.named_modules() if isinstance(m, OriginalDeltaConv)}
    layers = delta_layers(ours)
    assert list(layers) == list(ref_layers)
    choices = {n: ("full" if m.g_W is m.g_Wa else "lowrank") for n, m in ref_layers.items()}
    assert {n: layer.choice() for n, layer in layers.items()} == choices
    assert set(choices.values()) == {"full", "lowrank"}
    diffs = {}
    diffs["teacher"] = (_run(ours, 1) - _run(ref, 1, True)).abs().max()
    diffs["delta"] = (_run(ours, 2) - _run(ref, 2, True)).abs().max()
    for student in ("full", "lowrank"):
        for name, m in ref_layers.items():
            m.g_W = m.g_Wa if student == "full" else m.g_Wb
            layers[name].force = student
        diffs[student] = (_run(ours, 2) - _run(ref, 2, True)).abs().max()
    for name, m in ref_layers.items():  # restore the fixture's choices
        m.g_W = m.g_Wa if choices[name] == "full" else m.g_Wb
    scale = _run(ref, 2, True).abs().max()
    print(
        f"\nmax abs differences (output scale {scale:.3g}):", {k: f"{float(v):.2e}" for k, v in diffs.items()}
    )
    assert all(d <= 1e-4 for d in diffs.values()), diffs
    assert (_run(ours, 2)[1] - _run(ours, 1)[0]).abs().max() > 1e-2  # the delta frame is not a copy


def test_deployed_layout_deploys_the_model_to_the_checkpoints_students(original):
    ref, _ = original
    deployed = copy.deepcopy(ref)
    for m in deployed.modules():
        if isinstance(m, OriginalDeltaConv):
            m.g_W = copy.deepcopy(m.g_W)
            del m.g_Wa, m.g_Wb, m.g_gate
    state = {f"model.{k}": v for k, v in deployed.state_dict().items()}
    choices = {
        n: ("full" if m.g_W is m.g_Wa else "lowrank") for n, m in ref.named_modules() if hasattr(m, "g_Wa")
    }
    # plain keys + one student per layer (1 conv or 2), + the second bias of conv1.3 (documented: 440 if all low-rank)
    assert len(state) == 333 + 53 + list(choices.values()).count("lowrank") + 1
    ours = _ours()
    load_original_state_dict(ours, state)
    assert {n: layer.choice() for n, layer in delta_layers(ours).items()} == choices
    assert all(layer.deployed for layer in delta_layers(ours).values())
    assert (_run(ours, 2) - _run(deployed, 2, True)).abs().max() <= 1e-4


def test_wrong_rank_bias_mode_or_layout_is_an_error_naming_the_key(original):
    _, state = original
    with torch.device("meta"):  # nothing is loaded: the checks come first
        wrong_rank, corrected = get_model("ddrnet23_slim"), get_model("ddrnet23_slim")
        plain = get_model("ddrnet23_slim")
    convert_to_delta(wrong_rank, factor_ch=2, bias_mode="original")
    convert_to_delta(corrected)
    with pytest.raises(
        CheckpointMismatchError, match=r"'model\.conv1\.3\.g_Wb\.0\.weight' is a rank-8 .* rank 16"
    ):
        load_original_state_dict(wrong_rank, state)
    with pytest.raises(
        ValueError, match=r"'model\.conv1\.3\.g_Wa\.bias' is a student bias.*bias_mode='original'"
    ):
        load_original_state_dict(corrected, state)
    frame_based = {f"model.{k}": v for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match=r"'model\.conv1\.3\.weight' is not in the delta-distilled layout"):
        load_original_state_dict(corrected, frame_based)
    missing_gate = {k: v for k, v in state.items() if k != "model.layer2.0.conv1.g_gate.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing +layer2\.0\.conv1\.gate\.logit"):
        load_original_state_dict(_ours(), missing_gate)
    with pytest.raises(ValueError, match="has no delta layers"):
        load_original_state_dict(plain, state)


def test_frame_based_checkpoint_becomes_teachers_with_initialised_students():
    plain = randomise(get_model("ddrnet23_slim"), seed=1).eval()
    state = {f"model.{k}": v for k, v in plain.state_dict().items()}
    ours = get_model("ddrnet23_slim")
    convert_to_delta(ours)
    ours.eval()
    load_frame_based_state_dict(ours, state)
    layer = delta_layers(ours)["layer3.0.conv1"]
    assert torch.equal(layer.student_full.weight, layer.teacher.weight)
    v, h = layer.student_lowrank.vertical.weight, layer.student_lowrank.horizontal.weight
    assert v.shape == (32, 64, 3, 1) and h.shape == (128, 32, 1, 3)
    assert float(layer.gate.logit.detach()) == -1.0
    with torch.no_grad():
        assert torch.equal(_run(ours, 1), plain(CLIP[:1]))
    with pytest.raises(ValueError, match=r"'conv1\.3\.g_Wa\.weight' belongs to a delta layer's submodule"):
        load_frame_based_state_dict(ours, {"conv1.3.g_Wa.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match=r"missing +final_layer\.conv2\.bias"):
        load_frame_based_state_dict(
            ours, {k: v for k, v in state.items() if k != "model.final_layer.conv2.bias"}
        )


def test_frame_based_initialisation_matches_the_originals():
    plain = randomise(get_model("ddrnet23_slim"), seed=2).eval()
    state = plain.state_dict()
    ref = get_model("ddrnet23_slim")
    convert_original(ref)
    original_init_from_frame_based(ref, state)
    ref.eval()
    ours = get_model("ddrnet23_slim")
    convert_to_delta(ours, bias_mode="original")
    load_frame_based_state_dict(ours, state)
    ours.eval()
    ref_layers = {n: m for n, m in ref.named_modules() if isinstance(m, OriginalDeltaConv)}
    for name, layer in delta_layers(ours).items():
        r = ref_layers[name]
        assert torch.equal(layer.student_full.weight, r.g_Wa.weight)
        # SVD factors are unique up to the sign of each component: compare the kernels they make
        theirs = torch.einsum("rch,orw->ochw", r.g_Wb[0].weight[..., 0], r.g_Wb[1].weight[:, :, 0])
        torch.testing.assert_close(layer.student_lowrank.product_kernel(), theirs, rtol=1e-4, atol=1e-5)
    conv13 = delta_layers(ours)["conv1.3"]
    assert torch.equal(conv13.student_lowrank.horizontal.bias, ref_layers["conv1.3"].g_Wb[1].bias)
    assert torch.equal(conv13.student_full.bias, state["conv1.3.bias"])
    for name, m in ref_layers.items():  # the original's gates start at -1: every layer low-rank
        m.g_W = m.g_Wb
        assert delta_layers(ours)[name].choice() == "lowrank"
    diff = (_run(ours, 2) - _run(ref, 2, True)).abs().max()
    print(f"\nfrom a frame-based checkpoint, all low-rank: max abs difference {float(diff):.2e}")
    assert diff <= 1e-4
