"""Particle Transformer (arXiv:2202.03772) as a weaver-core network file, built from
weaver-core's own module (pip install weaver-core), with the paper's sizes unless options
change them (e.g. {embed_dims: [64, 64], num_layers: 2}). Use it with
examples/configs/top-kin-inputs.yaml, whose groups the forward takes in order; ParT reads the
features, the Lorentz vectors (for its pair features) and the mask.
"""

import torch
from torch import nn
from weaver.nn.model.ParticleTransformer import ParticleTransformer

PAPER_SIZES = {
    "embed_dims": [128, 512, 128],
    "pair_embed_dims": [64, 64, 64],
    "num_heads": 8,
    "num_layers": 8,
    "num_cls_layers": 2,
    "fc_params": [],
}


class ParticleTransformerOnPfGroups(nn.Module):
    """weaver's ParticleTransformer, called with the four pf groups of the data config."""

    def __init__(self, **kwargs):
        super().__init__()
        self.mod = ParticleTransformer(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


def get_model(data_config, **kwargs):
    """weaver's entry point: the model and what its ONNX export names."""
    sizes = {**PAPER_SIZES, **kwargs}
    model = ParticleTransformerOnPfGroups(
        input_dim=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        pair_input_dim=4,
        use_pre_activation_pair=False,
        activation="gelu",
        trim=True,
        **sizes,
    )
    model_info = {
        "input_names": list(data_config.input_names),
        "input_shapes": {k: (1, *shape[1:]) for k, shape in data_config.input_shapes.items()},
        "output_names": ["softmax"],
        "dynamic_axes": {
            **{name: {0: "N", 2: "n_" + name.split("_")[0]} for name in data_config.input_names},
            "softmax": {0: "N"},
        },
    }
    return model, model_info


def get_loss(data_config, **kwargs):
    """The training loss (weaver's default for classification)."""
    return torch.nn.CrossEntropyLoss()
