"""ParticleNet (arXiv:1902.08570) as a weaver-core network file, built from weaver-core's own
module (pip install weaver-core). Train it with

    model:
      name: examples/networks/particlenet.py
      options: {conv_params: [[16, [64, 64, 64]], [16, [128, 128, 128]]]}   # optional
    data:
      config: examples/configs/top-kin-inputs.yaml

The forward takes every input group of the data config in its order (points, features,
Lorentz vectors, mask) and feeds ParticleNet the ones it reads. Options reach get_model as
keyword arguments, as weaver's --network-option does.
"""

import torch
from torch import nn
from weaver.nn.model.ParticleNet import ParticleNet

DEFAULT_CONV_PARAMS = [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))]
DEFAULT_FC_PARAMS = [(256, 0.1)]


class ParticleNetOnPfGroups(nn.Module):
    """weaver's ParticleNet, called with the four pf groups of the data config."""

    def __init__(self, **kwargs):
        super().__init__()
        self.mod = ParticleNet(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(points, features, mask)


def get_model(data_config, **kwargs):
    """weaver's entry point: the model and what its ONNX export names."""
    model = ParticleNetOnPfGroups(
        input_dims=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        conv_params=[tuple(block) for block in kwargs.get("conv_params", DEFAULT_CONV_PARAMS)],
        fc_params=[tuple(layer) for layer in kwargs.get("fc_params", DEFAULT_FC_PARAMS)],
        use_fusion=kwargs.get("use_fusion", False),
        use_fts_bn=True,
        use_counts=True,
        for_inference=kwargs.get("for_inference", False),
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
