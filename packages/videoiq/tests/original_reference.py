"""A re-creation of the ORIGINAL VideoIQ modules (sunxm2357/VideoIQ), for tests only.

Written from the documented structure (notes §1-§2, §7): the quantisers with the original's
float32 expressions (``n / diff`` on tensors, Python-float weight scales, ``x * m2 / m3``), the
``ResNet_PACT_Backbone`` with per-bit ``bn{k}_{b}`` / ``q_alpha{k}_{b}`` / tied
``downsample_{b}`` and the ``*_32fp`` teacher, the d-li14-style MobileNetV2 policy with DoReFa
first/last convs, an LSTMCell and the skip bookkeeping, and ``ada_forward``'s
``combine_logits``. Module and parameter names are the original's, so ``state_dict()`` has its
layout. Deterministic decisions only (the original's sampling is a per-sample Python loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------- quantisers


def orig_linear_quant_params(num_bits, sat_max):
    """(scale, zero point) as ``asymmetric_linear_quantization_params(num_bits, 0, sat_max)``."""
    scalar = not isinstance(sat_max, torch.Tensor)
    smax = torch.tensor([float(sat_max)]) if scalar else sat_max.detach().clone().float().reshape(1)
    smin = torch.zeros(1, device=smax.device)
    n = 2**num_bits - 1
    smax = torch.max(smax, torch.zeros_like(smax))
    diff = smax - smin
    diff[diff == 0] = n
    scale = n / diff  # a Python int over a tensor, as in the original
    zero_point = (scale * smin).round()
    if scalar:
        return scale.item(), zero_point.item()
    return scale, zero_point


class OrigLinearQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, d, zero_point):
        q_hi = torch.round(scale * x - zero_point)
        m2 = ((q_hi.clone() + zero_point) / scale).mean()
        q_lo = (torch.floor(q_hi / d) * d).float() if d != 1 else q_hi
        out = (q_lo + zero_point) / scale
        m3 = out.clone().mean()
        if m3 != 0:
            out = out * m2 / m3
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


def orig_dorefa(w, num_bits, num_bits_test=-1):
    scale, zero_point = orig_linear_quant_params(num_bits, 1)
    out = w.tanh()
    out = out / (2 * out.abs().max()) + 0.5
    if num_bits_test == -1:
        num_bits_test = num_bits
    d = int(2 ** (num_bits - num_bits_test))
    out = OrigLinearQuantSTE.apply(out, scale, d, zero_point)
    return 2 * out - 1


class OrigPACTSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, clip, num_bits):
        ctx.save_for_backward(x.detach().clone(), clip)
        scale, zero_point = orig_linear_quant_params(num_bits, clip.data)
        if x.min() < 0:
            raise ValueError("negative PACT input")
        out = torch.where(x > clip, torch.ones_like(x) * clip, x)
        q = torch.round(scale * out - zero_point)
        m2 = ((q.clone() + zero_point) / scale).mean()
        out = (q + zero_point) / scale
        m3 = out.clone().mean()
        if m3 != 0:
            out = out * m2 / m3
        return out

    @staticmethod
    def backward(ctx, grad):
        x, clip = ctx.saved_tensors
        gx = torch.where(x < 0, torch.zeros_like(grad), grad)
        gx = torch.where(x > clip, torch.zeros_like(gx), gx)
        ga = torch.where(x < clip, torch.zeros_like(grad), grad).sum().expand_as(clip)
        return gx, ga, None


class OrigConvQ(nn.Conv2d):
    """``conv2d_Q_fn_dorefa2``: forward(x, max_bit, bit)."""

    def forward(self, x, w_bit, w_bit_test=-1):
        return F.conv2d(x, orig_dorefa(self.weight, w_bit, w_bit_test), self.bias, self.stride, self.padding)


class OrigConvQFixed(nn.Conv2d):
    """``conv2d_Q_fn_dorefa(32)``: the policy's first and last convs."""

    def forward(self, x):
        return F.conv2d(x, orig_dorefa(self.weight, 32, -1), self.bias, self.stride, self.padding)


# ------------------------------------------------------------------------------------ backbone


class SeqArgs(nn.Sequential):
    """``mySequential``: passes tuples through."""

    def forward(self, *inputs):
        for m in self._modules.values():
            inputs = m(*inputs) if isinstance(inputs, tuple) else m(inputs)
        return inputs


class OrigBlock(nn.Module):
    """BasicBlock (expansion 1) or Bottleneck (expansion 4), quantised (``quantize_fp=True``, switch
    BN and clip) or the plain teacher block (family [32], no quantiser)."""

    def __init__(self, inplanes, planes, family, q_init, bottleneck, quantised, stride, downsamples):
        super().__init__()
        self.family, self.max_bit, self.quantised = family, max(family), quantised
        self.bottleneck = bottleneck
        convs = (1, 3, 1) if bottleneck else (3, 3)
        outs = (planes, planes, planes * 4) if bottleneck else (planes, planes)
        self.n = len(convs)
        if quantised:
            for b in family:
                for k in range(1, self.n + 1):
                    self.register_parameter(f"q_alpha{k}_{b}", nn.Parameter(q_init * torch.ones(1)))
        cin = inplanes
        for k, (ks, cout) in enumerate(zip(convs, outs), start=1):
            s = stride if k == (2 if bottleneck else 1) else 1  # R-50 v1.5: stride on the 3x3
            conv = (OrigConvQ if quantised else nn.Conv2d)(cin, cout, ks, s, ks // 2, bias=False)
            setattr(self, f"conv{k}", conv)
            if quantised:
                for b in family:
                    setattr(self, f"bn{k}_{b}", nn.BatchNorm2d(cout))
            else:
                setattr(self, f"bn{k}", nn.BatchNorm2d(cout))
            cin = cout
        self.relu = nn.ReLU()
        self.has_down = downsamples is not None
        if self.has_down:
            for b, ds in zip(family, downsamples):
                setattr(self, f"downsample_{b}", ds)

    def forward(self, x, bit):
        if self.quantised:
            x = OrigPACTSTE.apply(x, getattr(self, f"q_alpha1_{bit}"), bit)
        identity = x
        out = x
        for k in range(1, self.n + 1):
            if k > 1:
                out = self.relu(out)
                if self.quantised:
                    out = OrigPACTSTE.apply(out, getattr(self, f"q_alpha{k}_{bit}"), bit)
            conv = getattr(self, f"conv{k}")
            out = conv(out, self.max_bit, bit) if self.quantised else conv(out)
            out = getattr(self, f"bn{k}_{bit}" if self.quantised else f"bn{k}")(out)
        if self.has_down:
            ds = getattr(self, f"downsample_{bit}")
            identity = ds(x, self.max_bit, bit) if self.quantised else ds(x)
        out += identity
        return self.relu(out), bit


class OrigResNetPACTBackbone(nn.Module):
    """``ResNet_PACT_Backbone`` (switch_bn, switch_clipval, no temporal module) with the teacher."""

    def __init__(self, depth, num_frames, family, q_init, is_32fp, num_classes):
        super().__init__()
        self.bottleneck = depth >= 50
        layers = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
        self.num_frames, self.family = num_frames, family
        exp = 4 if self.bottleneck else 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{i}", self._make_layer(planes, n, 1 if i == 1 else 2, family, q_init, True))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.is_32fp = is_32fp
        if is_32fp:
            self.inplanes = 64
            self.conv1_32fp = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1_32fp = nn.BatchNorm2d(64)
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
                layer = self._make_layer(planes, n, 1 if i == 1 else 2, [32], q_init, False)
                setattr(self, f"layer{i}_32fp", layer)
            self.fc_32fp = nn.Linear(512 * exp, num_classes)

    def _make_layer(self, planes, blocks, stride, family, q_init, quantised):
        exp = 4 if self.bottleneck else 1
        downsamples = None
        if stride != 1 or self.inplanes != planes * exp:
            conv = (OrigConvQ if quantised else nn.Conv2d)(self.inplanes, planes * exp, 1, stride, bias=False)
            if quantised:  # one conv object shared by the per-bit downsample Sequentials
                downsamples = [SeqArgs(conv, nn.BatchNorm2d(planes * exp)) for _ in family]
            else:
                downsamples = [SeqArgs(conv, nn.BatchNorm2d(planes * exp))]
        out = [
            OrigBlock(self.inplanes, planes, family, q_init, self.bottleneck, quantised, stride, downsamples)
        ]
        self.inplanes = planes * exp
        for _ in range(1, blocks):
            out.append(OrigBlock(self.inplanes, planes, family, q_init, self.bottleneck, quantised, 1, None))
        return SeqArgs(*out)

    def _trunk(self, x, bit, suffix=""):
        x = self.maxpool(self.relu(getattr(self, "bn1" + suffix)(getattr(self, "conv1" + suffix)(x))))
        for i in range(1, 5):
            x, _ = getattr(self, f"layer{i}{suffix}")(x, bit)
        return x

    def forward(self, x, bit):
        """x (B, 3T, H, W) -> (last map (BT, C, h, w), teacher logits (B, K) or None)."""
        b, ct, h, w = x.shape
        x = x.view(b * self.num_frames, ct // self.num_frames, h, w)
        out_32fp = fp5_32fp = None
        if self.is_32fp and bit == max(self.family):
            with torch.no_grad():
                fp5_32fp = self._trunk(x.clone(), 32, "_32fp")
                f = self.avgpool(fp5_32fp).flatten(1)
                out_32fp = self.fc_32fp(f).view(b, -1, self.fc_32fp.out_features).mean(dim=1)
        return self._trunk(x, bit), out_32fp, fp5_32fp


class OrigResNetPACTAP(OrigResNetPACTBackbone):
    """``ResNet_PACT_AP`` (step 2): the same trunk at the top level plus ``fc``, ``swap_r``."""

    def __init__(self, depth, num_frames, family, q_init, is_32fp, num_classes):
        super().__init__(depth, num_frames, family, q_init, is_32fp, num_classes)
        self.register_buffer("swap_r", torch.rand({18: 8, 50: 16}[depth]))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(512 * (4 if self.bottleneck else 1), num_classes)

    def forward(self, x, bit):
        b = x.shape[0]
        maps, out_32fp, _ = super().forward(x, bit)
        logits = self.fc(self.dropout(self.avgpool(maps).flatten(1)))
        return logits.view(b, -1, logits.shape[-1]).mean(dim=1), out_32fp


# -------------------------------------------------------------------------------------- policy


class OrigInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand):
        super().__init__()
        hidden = round(inp * expand)
        self.identity = stride == 1 and inp == oup
        layers = []
        if expand != 1:
            layers += [
                nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.identity else self.conv(x)


class OrigPolicy(nn.Module):
    """``policynet.MobileNetV2`` at p_bit 32, deterministic decisions."""

    def __init__(self, num_frames, prec_dim, skip_list, is_policy_pred, num_classes, hidden=512):
        super().__init__()
        self.register_buffer("temperature", torch.ones(1) * 5.0)
        self.num_frames, self.prec_dim, self.skip_list, self.hidden = num_frames, prec_dim, skip_list, hidden
        cfgs = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
        layers = [
            nn.Sequential(
                OrigConvQFixed(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)
            )
        ]
        cin = 32
        for t, c, n, s in cfgs:
            for i in range(n):
                layers.append(OrigInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.conv = nn.Sequential(
            OrigConvQFixed(cin, 1280, 1, 1, 0, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.8)
        self.rnn = nn.LSTMCell(1280, hidden)
        self.linear = nn.Linear(hidden, prec_dim + len(skip_list))
        self.is_policy_pred = is_policy_pred
        if is_policy_pred:
            self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        b, ct, h, w = x.shape
        x = x.view(b * self.num_frames, ct // self.num_frames, h, w)
        feat = self.dropout(self.avgpool(self.conv(self.features(x))).flatten(1)).view(b, self.num_frames, -1)
        remain = torch.zeros(b, 1)
        hx = torch.zeros(b, self.hidden)
        cx = torch.zeros(b, self.hidden)
        old = None
        rs, ps, hs = [], [], []
        for t in range(self.num_frames):
            hx, cx = self.rnn(feat[:, t], (hx, cx))
            hs.append(hx)
            p = torch.log(F.softmax(self.linear(hx), dim=1).clamp(min=1e-8))
            r = F.one_hot(p.argmax(dim=1), p.shape[1]).float()
            if old is not None:
                take_old = (remain > 0.5).float()
                take_cur = (~(remain > 0.5)).float()
                hx = old[0] * take_old + hx * take_cur
                r = old[1] * take_old + r * take_cur
                p = old[2] * take_old + p * take_cur
            for i in range(b):
                for k, s in enumerate(self.skip_list):
                    if remain[i][0] < 0.5 and r[i][self.prec_dim + k] > 0.5:
                        remain[i][0] = s
            old = (hx, r, p)
            rs.append(r)
            ps.append(p)
            remain = (remain - 1).clamp(0)
        out = self.fc(torch.stack(hs, dim=1).mean(dim=1)) if self.is_policy_pred else None
        return torch.stack(rs, dim=1), torch.stack(ps, dim=1), out


class OrigResNetVideoIQ(nn.Module):
    """``ResNetVideoIQ`` (switch_bn, switch_clipval, p_bit 32)."""

    def __init__(
        self,
        depth,
        num_frames,
        family,
        skip_list,
        q_init,
        is_32fp,
        is_policy_pred,
        num_classes,
        use_fp_as_bb=False,
    ):
        super().__init__()
        self.num_frames, self.family, self.use_fp_as_bb = num_frames, family, use_fp_as_bb
        self.prec_dim = len(family) + int(use_fp_as_bb)
        self.backbone = OrigResNetPACTBackbone(
            depth, num_frames, family, q_init, is_32fp or use_fp_as_bb, num_classes
        )
        self.policy_net = OrigPolicy(num_frames, self.prec_dim, skip_list, is_policy_pred, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(512 * (4 if depth >= 50 else 1), num_classes)

    def ada_forward(self, x, policy_size=84):
        """x (B, 3T, H, W) -> (video logits, r, p, teacher logits, policy logits, per-bit features)."""
        b = x.shape[0]
        r, p, policy_out = self.policy_net(F.interpolate(x, size=[policy_size, policy_size], mode="bilinear"))
        feats, out_32fp = [], None
        for idx, bit in enumerate(self.family):
            maps, teacher, maps_32fp = self.backbone(x, bit)
            if idx == 0:
                out_32fp = teacher
                if self.use_fp_as_bb:  # the float copy's features are the first choice
                    feats.append(self.avgpool(maps_32fp).flatten(1).view(b, self.num_frames, -1))
            feats.append(self.avgpool(maps).flatten(1).view(b, self.num_frames, -1))
        pred = torch.stack(feats, dim=2)
        rr = r[:, :, : self.prec_dim].unsqueeze(-1).expand_as(pred)
        t = torch.sum(r[:, :, : self.prec_dim], dim=[1, 2]).clamp(1) / float(self.num_frames)
        feat = (pred * rr).sum(dim=2)
        feat = feat / t.unsqueeze(-1).unsqueeze(-1).expand_as(feat)
        out = self.fc(self.dropout(feat.view(b * self.num_frames, -1)))
        out = out.view(b, self.num_frames, -1).mean(dim=1)
        return out, r, p, out_32fp, policy_out, feats


# ----------------------------------------------------------------------------------- helpers


def calibrate_bn(model: nn.Module, run) -> nn.Module:
    """Set every BN's running statistics to the cumulative batch statistics of ``run()`` in train
    mode (so that activations have realistic scales for the quantisers), then switch to eval."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        run()
    return model.eval()


def randomise(model: nn.Module, seed: int, clip_range=(0.5, 3.0)) -> nn.Module:
    """Random weights, BN statistics and PACT clips, so that nothing is an identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point or name.endswith("temperature"):
                continue
            if "q_alpha" in name:
                t.copy_(torch.empty(t.shape).uniform_(*clip_range, generator=g))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / max(t[0].numel(), 1)) ** 0.5)
    return model.eval()
