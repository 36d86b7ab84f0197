"""Models trainyard can train: a small zoo plus any user entry point 'package.module:callable'.

Every model takes forward(points_BCP, features_BCP, mask_B1P) and returns logits_BK; the
contract is written out in ``trainyard.models.interface`` and checked by
``check_model_interface``.
"""

from trainyard.models.interface import check_model_interface
from trainyard.models.mlp import MLPBaseline, build_mlp
from trainyard.models.particlenet import (
    ParticleNet,
    build_particlenet,
    build_particlenet_lite,
)
from trainyard.models.registry import accepted_options, build_model, known_models

__all__ = [
    "MLPBaseline",
    "ParticleNet",
    "accepted_options",
    "build_mlp",
    "build_model",
    "build_particlenet",
    "build_particlenet_lite",
    "check_model_interface",
    "known_models",
]
