"""A Particle Flow Network (arXiv:1810.05165) as a weaver-core network file, the module written
in the file itself (weaver-core has none): Phi on each particle, summed over the real ones,
then F. The paper's sizes unless options change them (phi_sizes, f_sizes). Use it with
examples/configs/top-kin-inputs.yaml; it reads the features and the mask.
"""

from torch import nn


def _layers(sizes, first, convolution):
    """Linear maps (1x1 convolutions over particles for Phi) with ReLU after each."""
    layers, width = [], first
    for size in sizes:
        layers += [nn.Conv1d(width, size, 1) if convolution else nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers), width


class ParticleFlowNetwork(nn.Module):
    def __init__(
        self, input_dims, num_classes, phi_sizes=(100, 100, 256), f_sizes=(100, 100, 100)
    ):
        super().__init__()
        self.input_bn = nn.BatchNorm1d(input_dims)
        self.phi, latent = _layers(phi_sizes, input_dims, convolution=True)
        f_layers, width = _layers(f_sizes, latent, convolution=False)
        self.f = nn.Sequential(f_layers, nn.Linear(width, num_classes))

    def forward(self, points, features, lorentz_vectors, mask):
        per_particle = self.phi(self.input_bn(features)) * mask
        return self.f(per_particle.sum(dim=-1))


def get_model(data_config, **kwargs):
    """weaver's entry point: the model and what its ONNX export names."""
    model = ParticleFlowNetwork(
        input_dims=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        **kwargs,
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
