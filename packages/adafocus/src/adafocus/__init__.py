"""AdaFocus (Wang et al., ICCV 2021): a cheap glance network sees every frame whole; a recurrent
policy picks one patch per frame from a grid of positions; an expensive focus network sees only
that patch; a GRU classifier over [glance, focus] features predicts at every step.

Modules: ``crop`` (patch geometry: hard and differentiable crops), ``policy`` (the recurrent
actor-critic and PPO), ``model`` (the network, batched and frame by frame), ``inference``
(early exit over an active set), ``cost`` (MACs per video), ``conversion`` (the authors'
checkpoints), ``training`` (one step module per training stage).
"""

from adafocus.model import AdaFocus, AdaFocusOutput, RecurrentClassifier
from adafocus.policy import PatchPolicy

__all__ = ["AdaFocus", "AdaFocusOutput", "PatchPolicy", "RecurrentClassifier"]
__version__ = "0.1.0"
