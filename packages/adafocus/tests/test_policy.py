"""The recurrent patch policy and the PPO pieces, on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from adafocus.policy import PatchPolicy, Rollout, discounted_returns, ppo_loss, ppo_update


def test_full_size_layer_shapes_match_the_original():
    with torch.device("meta"):
        policy = PatchPolicy(1280, (7, 7), grid=7, hidden=1024)
    shapes = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    assert shapes == {
        "state_encoder.0.weight": (32, 1280, 1, 1),
        "state_encoder.3.weight": (1024, 1568),
        "state_encoder.3.bias": (1024,),
        "gru.weight_ih_l0": (3072, 1024),
        "gru.weight_hh_l0": (3072, 1024),
        "gru.bias_ih_l0": (3072,),
        "gru.bias_hh_l0": (3072,),
        "actor.weight": (49, 1024),
        "actor.bias": (49,),
        "critic.weight": (1, 1024),
        "critic.bias": (1,),
    }
    assert sum(v.numel() for v in policy.parameters()) == 7_996_466  # the notes' count


def test_wrong_glance_map_is_a_clear_error():
    policy = PatchPolicy(8, (2, 2), grid=3, hidden=6)
    with pytest.raises(
        ValueError, match=r"built for glance feature maps of shape \(N, 8, 2, 2\), got \(1, 8, 3, 3\)"
    ):
        policy.step(torch.zeros(1, 8, 3, 3))
    with pytest.raises(ValueError, match="at least 2 positions"):
        PatchPolicy(8, (2, 2), grid=1)


def test_argmax_in_eval_sampling_in_training():
    torch.manual_seed(0)
    policy = PatchPolicy(4, (2, 2), grid=2, hidden=8)
    fmap = torch.randn(3, 4, 2, 2)
    policy.eval()
    step = policy.act(fmap)
    assert torch.equal(step.action, step.logits.argmax(1)) and step.hidden.shape == (3, 8)
    torch.testing.assert_close(step.log_prob, torch.log_softmax(step.logits, 1).amax(1))
    # training mode samples; frequencies follow the softmax
    policy.train()
    fmap = torch.randn(1, 4, 2, 2).expand(20000, 4, 2, 2)
    g = torch.Generator().manual_seed(1)
    step = policy.act(fmap, generator=g)
    freq = torch.bincount(step.action, minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.softmax(step.logits[0], 0), atol=0.015, rtol=0)
    assert policy.act(fmap[:2], sample=False).action.eq(step.logits[0].argmax()).all()


def test_evaluate_replays_the_stepwise_episode():
    torch.manual_seed(1)
    policy = PatchPolicy(4, (2, 2), grid=3, hidden=8).train()
    states = torch.randn(5, 2, 4, 2, 2)
    hidden, actions, log_probs = None, [], []
    for t in range(5):
        step = policy.act(states[t], hidden)
        hidden = step.hidden
        actions.append(step.action)
        log_probs.append(step.log_prob)
    lp, values, entropy = policy.evaluate(states, torch.stack(actions))
    torch.testing.assert_close(lp, torch.stack(log_probs), rtol=1e-5, atol=1e-6)
    assert values.shape == (5, 2) and entropy.shape == (5, 2)
    assert bool((entropy > 0).all() & (entropy <= math.log(9) + 1e-6).all())


def test_discounted_returns_hand_computed():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    raw = discounted_returns(rewards, 0.5, normalize=False)
    assert raw[:, 0].tolist() == [1.5, 1.0, 2.0]  # 1 + .5 (0 + .5 * 2), 0 + .5 * 2, 2
    norm = discounted_returns(rewards, 0.5)  # mean 1.5, unbiased std 0.5
    torch.testing.assert_close(norm[:, 0], torch.tensor([0.0, -1.0, 1.0]) * 0.5 / (0.5 + 1e-5))
    # normalisation is over all T x N entries together, not per column
    two = discounted_returns(torch.tensor([[1.0, 3.0]]), 0.7)
    torch.testing.assert_close(two, torch.tensor([[-1.0, 1.0]]) / (2**0.5 + 1e-5))  # mean 2, std sqrt(2)


def test_ppo_loss_hand_computed():
    log_probs = torch.log(torch.tensor([[0.6, 0.2]]))
    old = torch.log(torch.tensor([[0.5, 0.4]]))  # ratios 1.2 and 0.5
    returns = torch.tensor([[1.0, -1.0]])
    values = torch.tensor([[0.25, 0.0]])  # advantages 0.75 and -1
    entropy = torch.tensor([[0.7, 0.3]])
    loss, logs = ppo_loss(log_probs, old, returns, values, entropy, clip=0.1)
    # surrogates: min(0.9, 1.1 * 0.75) = 0.825; min(-0.5, 0.9 * -1) = -0.9 -> policy loss 0.0375
    # value: ((0.75)^2 + 1) / 2 = 0.78125; entropy 0.5
    assert logs["policy_loss"] == pytest.approx(0.0375)
    assert logs["value_loss"] == pytest.approx(0.78125)
    assert loss.item() == pytest.approx(0.0375 + 0.5 * 0.78125 - 0.01 * 0.5)
    assert logs["clip_fraction"] == 1.0
    # unclipped when the ratio stays within 1 +- clip: the plain advantage-weighted ratio
    loss2, _ = ppo_loss(log_probs, old, returns, values, entropy, clip=0.9, value_coef=0, entropy_coef=0)
    assert loss2.item() == pytest.approx(-(1.2 * 0.75 + 0.5 * -1) / 2)


def test_ppo_update_epochs_and_learning_a_bandit():
    torch.manual_seed(2)
    policy = PatchPolicy(4, (2, 2), grid=2, hidden=8).train()
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    states = torch.randn(3, 64, 4, 2, 2)
    g = torch.Generator().manual_seed(3)

    def collect():
        with torch.no_grad():
            hidden, acts, lps = None, [], []
            for t in range(3):
                step = policy.act(states[t], hidden, generator=g)
                hidden = step.hidden
                acts.append(step.action)
                lps.append(step.log_prob)
        actions = torch.stack(acts)
        return Rollout(states, actions, torch.stack(lps), (actions == 3).float())  # reward: position 3

    def p_good():
        with torch.no_grad():
            lp, _, _ = policy.evaluate(states, torch.full((3, 64), 3))
        return lp.exp().mean().item()

    before = p_good()
    logs = ppo_update(policy, opt, collect(), epochs=3)
    assert logs[0]["approx_kl"] == pytest.approx(0.0, abs=1e-6) and logs[0]["clip_fraction"] == 0.0
    assert logs[2]["approx_kl"] != pytest.approx(0.0, abs=1e-6)  # later epochs move off the rollout policy
    for _ in range(15):
        ppo_update(policy, opt, collect(), epochs=2)
    assert before < 0.4 and p_good() > 0.9, (before, p_good())
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        ppo_update(policy, opt, collect(), epochs=0)
