"""Models trainyard can train: a small zoo, any user entry point 'package.module:callable', and
weaver-core network files 'path/to/network.py'.

Every model takes the tensors of its input roles (``input_roles``; by default
forward(points_BCP, features_BCP, mask_B1P)) and returns logits_BK; the contract is written out
in ``trainyard.models.interface`` and checked by ``check_model_interface``.
"""

from trainyard.models.interface import check_model_interface
from trainyard.models.mlp import MLPBaseline, build_mlp
from trainyard.models.part import ParticleTransformer, build_particle_transformer
from trainyard.models.particlenet import (
    ParticleNet,
    build_particlenet,
    build_particlenet_lite,
)
from trainyard.models.pfn import ParticleFlowNetwork, build_pfn
from trainyard.models.registry import (
    accepted_options,
    build_loss,
    build_model,
    input_roles,
    known_models,
)

__all__ = [
    "MLPBaseline",
    "ParticleFlowNetwork",
    "ParticleNet",
    "ParticleTransformer",
    "accepted_options",
    "build_loss",
    "build_mlp",
    "build_model",
    "build_particle_transformer",
    "build_particlenet",
    "build_particlenet_lite",
    "build_pfn",
    "check_model_interface",
    "input_roles",
    "known_models",
]
