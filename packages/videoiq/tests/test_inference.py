"""Dynamic inference runs each frame only at its chosen precision, and nothing for skipped frames."""

from __future__ import annotations

import torch
from test_conversion import _clip, _module_state, _ours, original_videoiq
from test_model import ScriptedLinear

from videoiq.conversion import load_original_checkpoint
from videoiq.inference import dynamic_inference
from videoiq.model import VideoIQ
from videoiq.quant import QConv2d


def _converted(seed=1, b=3, t=6):
    ref, _ = original_videoiq(18, b, t, seed, teacher=False, policy_head=False)
    model, _ = _ours(18, teacher=False, policy_head=False)
    load_original_checkpoint(model, _module_state(ref))
    return model, _clip(b, t, seed)


def test_each_frame_runs_only_at_its_bit_width_and_skipped_frames_run_nothing():
    model, clip = _converted()
    # scripted actions (0-2: 32/4/2 bits, 3: skip 1, 4: skip 2) so that every branch occurs
    wanted = torch.tensor([[0, 1, 2, 3, 0, 4], [2, 2, 1, 0, 3, 1], [4, 0, 1, 2, 2, 0]])
    model.policy.linear = ScriptedLinear(torch.nn.functional.one_hot(wanted.T, 5).float() * 5)
    calls = []  # ("stem", frame ids) or ("q", name, bit width, batch size), in execution order
    frame_ids = {
        float(clip[i, j, 0, 0, 0]): (i, j) for i in range(clip.shape[0]) for j in range(clip.shape[1])
    }
    backbone = model.recognizer.backbone
    backbone.conv1.register_forward_hook(
        lambda _m, inp, _o: calls.append(("stem", [frame_ids[float(v)] for v in inp[0][:, 0, 0, 0]]))
    )
    qconvs = {name: m for name, m in backbone.named_modules() if isinstance(m, QConv2d)}
    for name, m in qconvs.items():
        m.register_forward_hook(
            lambda mod, inp, _o, name=name: calls.append(("q", name, mod.bit_width, len(inp[0])))
        )
    result = dynamic_inference(model, clip)
    actions = result.actions
    assert actions.tolist() == [[0, 1, 2, 3, 0, 4], [2, 2, 1, 0, 3, 1], [4, 4, 1, 2, 2, 0]]
    passes = [i for i, c in enumerate(calls) if c[0] == "stem"]
    expected = {}  # bit width -> the frames the policy assigned to it
    for (i, j), a in zip(
        [(i, j) for i in range(clip.shape[0]) for j in range(clip.shape[1])], actions.flatten()
    ):
        if a < len(model.family):
            expected.setdefault(model.family[a], []).append((i, j))
    assert len(passes) == len(expected)  # one backbone pass per bit width present
    for k, start in enumerate(passes):
        end = passes[k + 1] if k + 1 < len(passes) else len(calls)
        body = calls[start + 1 : end]
        ran = {bits for _, _, bits, _ in body}
        assert len(ran) == 1, ran  # a pass never mixes bit widths
        bits = ran.pop()
        assert sorted(calls[start][1]) == sorted(expected[bits])  # exactly the frames assigned to it
        assert {n for _, _, _, n in body} == {len(expected[bits])}
        assert sorted(c[1] for c in body) == sorted(qconvs)  # every quantised layer ran once
    processed = [f for c in calls if c[0] == "stem" for f in c[1]]
    skipped = [(i, j) for i in range(actions.shape[0]) for j in range(actions.shape[1]) if actions[i, j] >= 3]
    assert skipped and not set(skipped) & set(processed)
    assert torch.equal(result.bits, torch.tensor([32, 4, 2, 0, 0])[actions])
    assert result.kept.sum() == len(processed)


def test_dynamic_inference_agrees_with_running_every_precision():
    model, clip = _converted(seed=8)  # actions: 32 and 4 bits, skip 1 and skip 2
    with torch.no_grad():
        full = model(clip)
    result = dynamic_inference(model, clip)
    assert torch.equal(result.actions, full.policy.decisions.argmax(-1))
    # not bit-identical: PACT rescales by the mean over the batch it runs in (the original's
    # x * m2 / m3), so a frame's features move by ulps with its batch-mates; measured here up to
    # 2.8e-4 on 32-bit features of magnitude 7 and 1.7e-4 on the logits, none without the rescale
    torch.testing.assert_close(result.logits, full.logits, atol=1e-3, rtol=0)
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(clip.shape[0]))
    assert {m.bit_width for m in model.modules() if isinstance(m, QConv2d) and len(m.family) == 3} == {32}


def test_sampled_decisions_as_the_original_evaluation():
    torch.manual_seed(0)
    model = VideoIQ(arch="resnet18", num_classes=3, skip_list=(1,), policy_kwargs={"input_size": 32})
    clip = torch.randn(2, 4, 3, 32, 32)
    assert model.training
    first = dynamic_inference(model, clip)
    assert not any(m.training for m in model.modules())  # put in eval mode
    model.policy.backbone.train()  # one submodule back in training mode: eval again
    assert torch.equal(dynamic_inference(model, clip).actions, first.actions)  # argmax by default
    assert not any(m.training for m in model.modules())
    draws = [dynamic_inference(model, clip, sample=True) for _ in range(4)]
    assert any(not torch.equal(d.actions, draws[0].actions) for d in draws[1:])  # near-uniform policy
    for d in draws:
        assert torch.equal(d.bits, torch.tensor([32, 4, 2, 0])[d.actions])
        torch.testing.assert_close(d.probs.sum(-1), torch.ones(2))
