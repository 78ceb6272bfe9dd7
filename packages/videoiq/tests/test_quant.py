"""The quantisers against hand-computed values and against the original's operation order."""

from __future__ import annotations

import copy

import pytest
import torch
from original_reference import OrigPACTSTE, orig_dorefa

from videoiq.quant import (
    _PACTSTE,
    PACT,
    QConv2d,
    SwitchableBatchNorm2d,
    check_family,
    clear_inference_caches,
    dorefa_weight,
    pact,
    set_bit_width,
)


def _weights_with_tanh(u: list[float]) -> torch.Tensor:
    return torch.atanh(torch.tensor(u, dtype=torch.float64)).float()


def test_truncation_and_mean_rescale_by_hand_max_bits_4():
    # tanh(w) = u, max|u| = 0.8: x = u / 1.6 + 0.5 = [0, .375, .5625, .8125, 1]
    w = _weights_with_tanh([-0.8, -0.2, 0.1, 0.5, 0.8])
    # B = b = 4: round(15 x) = [0, 6, 8, 12, 15] (5.625, 8.4375, 12.1875), no rescale
    expect4 = torch.tensor([0, 6, 8, 12, 15]) / 15 * 2 - 1
    torch.testing.assert_close(dorefa_weight(w, 4, 4), expect4, atol=1e-6, rtol=0)
    # b = 2: floor(q / 4) * 4 = [0, 4, 8, 12, 12], rescaled by mean(q_B) / mean(q_b) = 41 / 36
    expect2 = torch.tensor([0, 4, 8, 12, 12]) / 15 * (41 / 36) * 2 - 1
    torch.testing.assert_close(dorefa_weight(w, 2, 4), expect2, atol=1e-6, rtol=0)


def test_truncation_from_32_bits_is_floor_of_2_to_the_b():
    w = _weights_with_tanh([-0.9, -0.3, 0.2, 0.45, 0.7])
    x = torch.tanh(w.double()) / (2 * 0.9) + 0.5
    # B = 32: no rounding at 2^32 in float32; 4 bits = floor(16 x) / 16, mean-rescaled to mean(x)
    lo = torch.floor(16 * x) / 16
    expect = (lo * x.mean() / lo.mean()) * 2 - 1
    assert not torch.allclose(lo * 2 - 1, expect, atol=1e-3)  # the rescale matters here
    torch.testing.assert_close(dorefa_weight(w, 4, 32).double(), expect, atol=2e-6, rtol=0)
    # the "32-bit" member is tanh-normalised, not the raw weight
    torch.testing.assert_close(
        dorefa_weight(w, 32, 32), torch.tanh(w) / torch.tanh(w).abs().max(), atol=2e-7, rtol=0
    )


def test_weight_grid_depends_on_the_family_maximum():
    w = torch.randn(64, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    from_4 = dorefa_weight(w, 4, 4)  # round(15 x) / 15: at most 16 levels on the 2/15 grid
    assert len(torch.unique(from_4)) <= 16
    torch.testing.assert_close((from_4 + 1) * 7.5, torch.round((from_4 + 1) * 7.5), atol=1e-5, rtol=0)
    assert not torch.equal(from_4, dorefa_weight(w, 4, 32))
    assert len(torch.unique(dorefa_weight(w, 2, 4))) <= 4


@pytest.mark.parametrize("bits,max_bits", [(32, 32), (4, 32), (2, 32), (4, 4), (2, 4), (8, 8), (3, 8)])
def test_dorefa_equals_the_original_bit_for_bit(bits, max_bits):
    g = torch.Generator().manual_seed(bits * 100 + max_bits)
    for shape in [(32, 16, 3, 3), (8, 3, 7, 7), (64, 64, 1, 1)]:
        w = torch.randn(*shape, generator=g) * 0.1
        assert torch.equal(dorefa_weight(w, bits, max_bits), orig_dorefa(w, max_bits, bits))


def test_dorefa_gradient_is_straight_through():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    g = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    (dorefa_weight(w, 2, 32) * g).sum().backward()
    w2 = w.detach().clone().requires_grad_(True)
    (torch.tanh(w2) / torch.tanh(w2).abs().max() * g).sum().backward()  # the unrounded map
    torch.testing.assert_close(w.grad, w2.grad, atol=1e-6, rtol=1e-5)


def test_pact_forward_and_backward_by_hand():
    x = torch.tensor([0.0, 0.3, 1.0, 1.7, 2.0, 2.5, 3.0], requires_grad=True)
    alpha = torch.tensor([2.0], requires_grad=True)
    out = pact(x, alpha, 2)
    # scale = 3 / 2: round([0, .45, 1.5, 2.55, 3, 3, 3]) = [0, 0, 2, 3, 3, 3, 3] (half to even)
    torch.testing.assert_close(out, torch.tensor([0, 0, 2, 3, 3, 3, 3]) / 1.5, atol=1e-7, rtol=0)
    grad = torch.arange(1.0, 8.0)
    out.backward(grad)
    assert x.grad.tolist() == [1, 2, 3, 4, 5, 0, 0]  # inside [0, alpha], alpha itself included
    assert alpha.grad.tolist() == [5 + 6 + 7]  # every element >= alpha
    with pytest.raises(ValueError, match="non-negative"):
        pact(torch.tensor([-0.1, 1.0]), alpha, 2)


@pytest.mark.parametrize("bits", [32, 8, 4, 2])
def test_pact_equals_the_original_bit_for_bit(bits):
    g = torch.Generator().manual_seed(bits)
    for _ in range(20):
        alpha = torch.empty(1).uniform_(0.3, 7.0, generator=g).requires_grad_(True)
        x = (torch.randn(4, 8, 5, 5, generator=g).abs() * alpha.detach() * 0.7).requires_grad_(True)
        gout = torch.randn(4, 8, 5, 5, generator=g)
        ours = pact(x, alpha, bits)
        ours.backward(gout)
        x2, a2 = x.detach().clone().requires_grad_(True), alpha.detach().clone().requires_grad_(True)
        ref = OrigPACTSTE.apply(x2, a2, bits)
        ref.backward(gout)
        assert torch.equal(ours, ref)
        assert torch.equal(x.grad, x2.grad) and torch.equal(alpha.grad, a2.grad)


def test_pact_scale_is_a_reciprocal_times_an_integer_not_a_quotient():
    # the original's `n / alpha` is reciprocal(alpha) * n in torch; for about a third of the clips
    # a true quotient differs by an ulp and rounds inputs at level boundaries the other way
    n = 3
    alphas = torch.linspace(0.5, 4.0, 200)
    candidates = alphas[(torch.tensor(float(n)) / alphas) != alphas.reciprocal() * n]
    assert len(candidates) > 20
    hits = 0
    for a in candidates:
        alpha = a.reshape(1)
        recip_scale, true_scale = alpha.reciprocal() * n, torch.tensor([float(n)]) / alpha
        # inputs at and around the rounding boundaries between levels
        boundary = (torch.arange(0, n) + 0.5) / recip_scale
        x = (boundary[:, None] * (1 + torch.arange(-3, 4) * 6e-8)).flatten().clamp(0, a.item())
        hits += int((torch.round(true_scale * x) != torch.round(recip_scale * x)).any())
        expect = torch.round(recip_scale * x) / recip_scale
        m = expect.mean()
        assert torch.equal(pact(x, alpha, 2), expect * m / m)
        assert torch.equal(pact(x, alpha, 2), OrigPACTSTE.apply(x, alpha, 2))
    assert hits > 0  # the quotient would have changed some levels


def test_switchable_bn_selects_the_active_bit_width():
    bn = SwitchableBatchNorm2d(3, (32, 4, 2))
    for i, b in enumerate((32, 4, 2)):
        bn.bns[str(b)].running_mean.fill_(float(i + 1))
    bn.eval()
    x = torch.zeros(2, 3, 4, 4)
    for i, b in enumerate((32, 4, 2)):
        set_bit_width(bn, b)
        torch.testing.assert_close(bn(x), torch.full_like(x, -(i + 1) / (1 + 1e-5) ** 0.5))
    bn.train()
    set_bit_width(bn, 4)
    bn(torch.randn(4, 3, 4, 4))
    assert [int(bn.bns[str(b)].num_batches_tracked) for b in (32, 4, 2)] == [0, 1, 0]
    with pytest.raises(ValueError, match="bit width 8 is not in the family"):
        set_bit_width(bn, 8)


def test_pact_module_has_one_clip_per_bit_and_qconv_shares_the_weight():
    act = PACT((32, 4, 2), init=[4.0, 3.0, 2.0])
    assert sorted(dict(act.named_parameters())) == ["clips.2", "clips.32", "clips.4"]
    set_bit_width(act, 2)
    assert act(torch.tensor([5.0])).item() == 2.0  # clipped by the 2-bit clip
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    q = QConv2d.from_conv(conv, (32, 4))
    assert q.weight is conv.weight and q.revert().weight is conv.weight
    set_bit_width(q, 4)
    x = torch.rand(1, 4, 5, 5)
    torch.testing.assert_close(
        q(x), torch.nn.functional.conv2d(x, dorefa_weight(conv.weight, 4, 32), padding=1)
    )


def test_family_validation():
    assert check_family([32, 4, 2]) == (32, 4, 2)
    with pytest.raises(ValueError, match="start with its largest"):
        check_family([4, 32])
    with pytest.raises(ValueError, match="repeats"):
        check_family([4, 4])
    with pytest.raises(ValueError, match=r"\[2, 32\]"):
        check_family([1])


def test_mean_aligned_rescales_to_the_mean_of_the_input():
    x = torch.tensor([0.1, 0.4, 0.9, 1.6, 2.5])
    alpha = torch.tensor([2.0])
    plain = pact(x, alpha, 2)
    aligned = pact(x, alpha, 2, mean_aligned=True)
    torch.testing.assert_close(aligned, plain * x.mean() / plain.mean())  # clipped input mean included
    torch.testing.assert_close(aligned.mean(), x.mean())
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    u = torch.tanh(w)
    x01 = u / (2 * u.abs().max()) + 0.5
    aligned_w = dorefa_weight(w, 2, 32, mean_aligned=True)
    torch.testing.assert_close(((aligned_w + 1) / 2).mean(), x01.mean())


def _qconv(seed: int = 0, mean_aligned: bool = False) -> QConv2d:
    conv = torch.nn.Conv2d(6, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return QConv2d.from_conv(conv, (32, 4, 2), mean_aligned=mean_aligned)


def _assert_weights_fresh(q: QConv2d) -> None:
    """In eval without autograd: every bit width's weight equals a fresh dorefa_weight, bit for bit,
    is computed once (the second call returns the same tensor), and the conv uses it."""
    x = torch.rand(2, 6, 5, 5, generator=torch.Generator().manual_seed(9))
    for b in q.family:
        set_bit_width(q, b)
        with torch.no_grad():
            first = q.quantised_weight()
            expect = dorefa_weight(q.weight, b, 32, mean_aligned=q.mean_aligned)
            assert torch.equal(first, expect)
            assert q.quantised_weight() is first
            assert torch.equal(q(x), torch.nn.functional.conv2d(x, expect, padding=1))


@pytest.mark.parametrize("mean_aligned", [False, True])
def test_quantised_weight_cache_is_bit_identical_and_follows_every_change(mean_aligned):
    q = _qconv(mean_aligned=mean_aligned).eval()
    _assert_weights_fresh(q)
    # an in-place write under no_grad (eval mode throughout) bumps the version: recomputed
    with torch.no_grad():
        q.weight.mul_(1.5)
    _assert_weights_fresh(q)
    # a training step: train() drops the cache, the optimiser's in-place update bumps the version
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    set_bit_width(q, 2)
    q(torch.rand(2, 6, 5, 5)).square().sum().backward()
    opt.step()
    q.eval()
    _assert_weights_fresh(q)
    # load_state_dict, and a replaced parameter
    q.load_state_dict(_qconv(seed=3).state_dict())
    _assert_weights_fresh(q)
    q.weight = torch.nn.Parameter(torch.randn(8, 6, 3, 3) * 0.3)
    _assert_weights_fresh(q)
    # a write through .data is invisible to the version counter: clear_inference_caches
    q.weight.data.add_(0.05)
    assert clear_inference_caches(q) == 1
    _assert_weights_fresh(q)


def test_quantised_weight_is_not_cached_with_autograd_or_in_training():
    q = _qconv().eval()
    set_bit_width(q, 4)
    w = q.quantised_weight()  # autograd on: a fresh tensor in the graph every call
    assert w.requires_grad and q.quantised_weight() is not w
    q.train()
    with torch.no_grad():
        assert q.quantised_weight() is not q.quantised_weight()  # training mode: never cached
    q.eval()
    with torch.no_grad():
        cached = q.quantised_weight()
    # gradients are those of the uncached path
    x = torch.rand(2, 6, 5, 5, generator=torch.Generator().manual_seed(1))
    q(x).square().sum().backward()
    w2 = q.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.conv2d(x, dorefa_weight(w2, 4, 32), padding=1).square().sum().backward()
    assert torch.equal(q.weight.grad, w2.grad)
    with torch.no_grad():
        assert q.quantised_weight() is cached  # the weight did not change
    # a deep copy recomputes for its own weight
    twin = copy.deepcopy(q)
    with torch.no_grad():
        twin.weight.add_(1.0)
    _assert_weights_fresh(twin)
    _assert_weights_fresh(q)


@pytest.mark.parametrize("mean_aligned", [False, True])
def test_pact_without_autograd_is_bit_identical(mean_aligned):
    g = torch.Generator().manual_seed(5)
    alphas = [torch.empty(1).uniform_(0.3, 7.0, generator=g) for _ in range(10)]
    alphas += [torch.zeros(1), torch.tensor([-0.5])]
    for bits in (32, 8, 4, 2):
        for alpha in alphas:
            x = torch.randn(3, 4, 6, 6, generator=g).abs() * max(float(alpha), 1.0) * 0.8
            x[0, 0, 0] = 0.0
            ref = _PACTSTE.apply(x, alpha, bits, True, mean_aligned)
            with torch.no_grad():
                assert torch.equal(pact(x, alpha, bits, mean_aligned=mean_aligned), ref)
            assert torch.equal(OrigPACTSTE.apply(x, alpha, bits), _PACTSTE.apply(x, alpha, bits, True, False))
    alpha = torch.tensor([2.0])
    with torch.no_grad():
        zeros = torch.zeros(2, 3)  # mean 0: no rescale
        assert torch.equal(pact(zeros, alpha, 2), _PACTSTE.apply(zeros, alpha, 2, True, False))
        with pytest.raises(ValueError, match="non-negative"):
            pact(torch.tensor([-0.1, 1.0]), alpha, 2)
        nan_clip = torch.tensor([float("nan")])  # where and min differ on a NaN clip: the original path
        x = torch.rand(8)
        torch.testing.assert_close(
            pact(x, nan_clip, 2), _PACTSTE.apply(x, nan_clip, 2, True, False), rtol=0, atol=0, equal_nan=True
        )


def test_pact_module_without_autograd_is_bit_identical_and_follows_its_clip():
    act = PACT((32, 4, 2), init=[3.0, 2.5, 1.7]).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 8, 5, 5, generator=g) * 3

    def check() -> None:
        for b in act.family:
            set_bit_width(act, b)
            ref = OrigPACTSTE.apply(x, act.clips[str(b)].detach(), b)
            with torch.no_grad():
                assert torch.equal(act(x), ref) and torch.equal(act(x), ref)  # the second: cached scale
            assert torch.equal(act(x), ref)  # with autograd

    check()
    with torch.no_grad():
        act.clips["4"].fill_(1.3)  # an in-place write in eval mode: the scale is recomputed
    check()
    act.load_state_dict(PACT((32, 4, 2), init=[2.0, 0.9, 4.4]).state_dict())
    check()
    act.train()
    with torch.no_grad():
        act.clips["2"].fill_(0.6)
    check()
    act.check_nonnegative = False  # the check off: a negative input goes through as with autograd
    neg = torch.tensor([-0.5, 0.2, 1.0])
    with torch.no_grad():
        assert torch.equal(act(neg), _PACTSTE.apply(neg, act.clips["2"].detach(), 2, False, False))
