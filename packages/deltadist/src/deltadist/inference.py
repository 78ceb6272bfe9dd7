"""Inference-only rewrites of a (delta or plain) segmentation network that keep its outputs.

* :func:`fold_batchnorm`: every eval-mode ``BatchNorm2d`` that directly follows a convolution (the
  convolution's output feeds nothing else) is folded into it and replaced by ``nn.Identity``. A
  plain ``nn.Conv2d`` is fused with torch's ``fuse_conv_bn_eval``. A :class:`~deltadist.delta.DeltaConv`
  folds exactly too, because BatchNorm is affine per channel::

      BN(z_0 + dz) = s * z_0 + (beta - s * mean) + s * dz,     s = gamma / sqrt(var + eps)

  so the teacher takes the whole BatchNorm (``fuse_conv_bn_eval``) and every student only its
  scale ``s`` (``fuse_conv_bn_weights`` with a zero mean and a zero shift; the low-rank student
  scales its second convolution). Delta frames then no longer run a BatchNorm at all.
* :func:`optimize_for_inference`: BatchNorm folding, then channels-last memory format (optional);
  :func:`inference_copy`: the same on a deployed copy, the default of ``deltadist.evaluation``
  (so of ``deltadist-eval`` and the demo's ms/frame): the fastest settings measured on the CPU
  that keep the outputs (``benchmarks/deltadist.md``).

Both are for inference only: a folded model has no BatchNorm statistics to train. The pairs are
found by tracing the model with ``torch.fx`` (delta layers as leaves); a model that does not trace
is an error naming the reason.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from deltadist.delta import DeltaConv, delta_layers, deploy
from deltadist.students import SeparableConv
from effvid.models.surgery import get_submodule_parent

__all__ = ["conv_bn_pairs", "fold_batchnorm", "inference_copy", "optimize_for_inference"]


class _LeafTracer(fx.Tracer):
    """Delta layers stay single nodes (their forward branches on Python state)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, DeltaConv) or super().is_leaf_module(m, module_qualified_name)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, BatchNorm name)`` for every ``BatchNorm2d`` whose input is the output of a
    ``nn.Conv2d`` or :class:`DeltaConv` that nothing else reads, in graph order. A module called
    more than once is left out (folding would change its other calls)."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx to find conv/BatchNorm pairs: {exc}"
        ) from exc
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.BatchNorm2d):
            continue
        if len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        if src.op != "call_module" or len(src.users) != 1:
            continue
        conv = model.get_submodule(src.target)
        if type(conv) is not nn.Conv2d and not isinstance(conv, DeltaConv):
            continue
        if calls[src.target] == 1 and calls[node.target] == 1:
            pairs.append((src.target, node.target))
    return pairs


@torch.no_grad()
def _scale_student(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``conv``'s output times the BatchNorm's scale (no shift: a delta has none)."""
    zero = torch.zeros_like(bn.running_mean)
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, zero, bn.running_var, bn.eps, bn.weight, None if bn.bias is None else zero
    )
    conv.weight.copy_(weight)
    if conv.bias is not None:
        conv.bias.copy_(bias)


@torch.no_grad()
def _fold_delta(layer: DeltaConv, bn: nn.BatchNorm2d) -> None:
    students = [layer.student] if layer.deployed else [layer.student_full, layer.student_lowrank]
    for student in students:
        _scale_student(student.horizontal if isinstance(student, SeparableConv) else student, bn)
    layer.teacher = fuse_conv_bn_eval(layer.teacher, bn)
    if layer._key_output is not None:  # a stream's kept keyframe output must be in the new units
        layer.reset_stream()


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold each BatchNorm of :func:`conv_bn_pairs` into its convolution, in place; returns the pairs.

    The model must be in eval mode (its BatchNorms use their running statistics). Outputs are
    unchanged up to float rounding; a delta layer's streamed keyframe is forgotten (reset).

    Raises:
        ValueError: the model is in training mode, or does not trace.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model: call model.eval() first")
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if isinstance(conv, DeltaConv):
            _fold_delta(conv, bn)
        else:
            parent, child = get_submodule_parent(model, conv_name)
            setattr(parent, child, fuse_conv_bn_eval(conv, bn))
        parent, child = get_submodule_parent(model, bn_name)
        setattr(parent, child, nn.Identity())
    return pairs


def optimize_for_inference(
    model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """Eval mode, BatchNorm folding (:func:`fold_batchnorm`) and channels-last weights, in place.

    Inputs may stay contiguous (NCHW): the first convolution then produces channels-last
    activations for the rest of the network. Returns ``model``.
    """
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def inference_copy(model: nn.Module, *, channels_last: bool | None = None) -> nn.Module:
    """A deep copy for inference: eval mode, delta layers deployed (the students their gates or
    ``force`` pick), BatchNorm folded, and channels-last where ``channels_last`` says (``None``: on
    the CPU only, where it was measured to help; the GPU is not measured). ``model`` is untouched."""
    # what the last forward left in the delta layers (training deltas with their autograd graph,
    # a stream's keyframe) is not part of the model and cannot be deep-copied: the copy gets None
    memo: dict[int, None] = {}
    for layer in delta_layers(model).values():
        for name in ("student_delta", "gate_value", "teacher_delta", "_key_input", "_key_output"):
            kept = getattr(layer, name, None)
            if isinstance(kept, torch.Tensor):
                memo[id(kept)] = None
    twin = copy.deepcopy(model, memo).eval()
    if delta_layers(twin):
        deploy(twin)
    param = next(twin.parameters(), None)
    if channels_last is None:
        channels_last = param is None or param.device.type == "cpu"
    return optimize_for_inference(twin, fold_bn=True, channels_last=channels_last)
