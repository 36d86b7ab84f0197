"""ParticleNet: parameter counts, numerical parity with weaver-core, masking, determinism.

Shape legend: B batch, C channels, P particle slots, K classes.
"""

import copy

import pytest
import torch
from torch import nn
from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet

from tests.models.batchnorms import randomise_batchnorms
from trainyard.errors import ModelError
from trainyard.models import ParticleNet, build_particlenet, build_particlenet_lite
from trainyard.models._idle_edges import live_particles
from trainyard.models.particlenet import set_idle_edge_skipping
from trainyard.worker.sync_batchnorm import convert_cpu_sync_batchnorm

NUM_FEATURES = 7
NUM_CLASSES = 2
BATCH = 8
SLOTS = 128
# Real particles per jet: full, at most k=16 padded slots (they have real neighbours, so their
# edges are computed), typical, fewer than k+1 (padded neighbours), and empty.
MULTIPLICITIES = (128, 115, 64, 40, 23, 12, 5, 0)

CONFIGS = {
    "particlenet": ([(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))], 256),
    "particlenet-lite": ([(7, (32, 32, 32)), (7, (64, 64, 64))], 128),
    # The second block keeps its width, so it has no shortcut convolution (sc is None).
    "same-width": ([(4, (16, 32)), (4, (32, 32))], 24),
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weaver_model(config: str) -> WeaverParticleNet:
    conv_params, fc_dim = CONFIGS[config]
    return WeaverParticleNet(
        NUM_FEATURES,
        NUM_CLASSES,
        conv_params=conv_params,
        fc_params=[(fc_dim, 0.1)],
        use_fusion=False,
        trim=False,
    )


def our_model(config: str) -> ParticleNet:
    conv_params, fc_dim = CONFIGS[config]
    return ParticleNet(NUM_FEATURES, NUM_CLASSES, conv_params, fc_params=[(fc_dim, 0.1)])


def paired_models(config: str) -> tuple[WeaverParticleNet, ParticleNet]:
    torch.manual_seed(1902)
    reference = weaver_model(config)
    randomise_batchnorms(reference, seed=8570)
    ours = our_model(config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def jet_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random points and features with real particles scattered over the slots."""
    generator = torch.Generator().manual_seed(seed)
    points_BCP = torch.randn(BATCH, 2, SLOTS, generator=generator)
    features_BCP = torch.randn(BATCH, NUM_FEATURES, SLOTS, generator=generator)
    mask_B1P = torch.zeros(BATCH, 1, SLOTS)
    for jet, multiplicity in enumerate(MULTIPLICITIES):
        slots = torch.randperm(SLOTS, generator=generator)[:multiplicity]
        mask_B1P[jet, 0, slots] = 1.0
    return points_BCP, features_BCP, mask_B1P


def test_parameter_count_matches_the_paper() -> None:
    model = build_particlenet(NUM_FEATURES, NUM_CLASSES)
    assert count_parameters(model) == 366_160


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_parameter_count_matches_weaver(config: str) -> None:
    assert count_parameters(our_model(config)) == count_parameters(weaver_model(config))


def test_builders_match_their_weaver_configurations() -> None:
    full = build_particlenet(NUM_FEATURES, NUM_CLASSES)
    full.load_state_dict(weaver_model("particlenet").state_dict(), strict=True)
    lite = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES)
    lite.load_state_dict(weaver_model("particlenet-lite").state_dict(), strict=True)
    assert [block.k for block in lite.edge_convs] == [7, 7]


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_eval_outputs_match_weaver(config: str) -> None:
    reference, ours = paired_models(config)
    reference.eval()
    ours.eval()
    points_BCP, features_BCP, mask_B1P = jet_batch()
    with torch.no_grad():
        expected_BK = reference(points_BCP, features_BCP, mask_B1P)
        logits_BK = ours(points_BCP, features_BCP, mask_B1P)
    assert logits_BK.shape == (BATCH, NUM_CLASSES)
    assert (logits_BK - expected_BK).abs().max().item() < 1e-5


def test_live_particles_are_the_real_ones_and_the_padded_slots_of_nearly_full_jets() -> None:
    """A padded slot's edges are skipped only where its jet has more than k padded slots."""
    padded_BP = torch.tensor([[False, False, True, True], [False, True, True, True]])
    assert live_particles(padded_BP, k=2).tolist() == [0, 1, 2, 3, 4]
    assert live_particles(padded_BP, k=1).tolist() == [0, 1, 4]


def _computing_every_edge(plain: ParticleNet, how: str) -> ParticleNet:
    """A copy of the model whose EdgeConv blocks may not count idle edges as one column."""
    model = copy.deepcopy(plain)
    if how == "torch-sync-batchnorm":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if how == "cpu-sync-batchnorm":
        return convert_cpu_sync_batchnorm(model)
    set_idle_edge_skipping(model, enabled=False)
    return model


@pytest.mark.parametrize("how", ["torch-sync-batchnorm", "cpu-sync-batchnorm", "skipping-off"])
def test_other_norms_are_called_on_every_edge_and_train_as_the_skipping_model(how: str) -> None:
    """Only a plain nn.BatchNorm may count the idle edges as one column: a SyncBatchNorm must
    all-reduce statistics over every edge (on one process it computes the local ones), so
    each edge norm of another class, or with skipping off, is called as a module on all
    B*P*N edges, and the step is the skipping model's (logits, gradients, running
    statistics)."""
    _, plain = paired_models("particlenet-lite")
    other = _computing_every_edge(plain, how)
    seen: list[tuple[int, ...]] = []
    for block in other.edge_convs:
        for norm in block.bns:
            norm.register_forward_hook(lambda _, args, __: seen.append(tuple(args[0].shape)))
    points_BCP, features_BCP, mask_B1P = jet_batch(seed=2)
    labels_B = torch.tensor([1, 0] * (BATCH // 2))
    logits = []
    for model in (plain, other):
        model.train()
        torch.manual_seed(11)
        logits.append(model(points_BCP, features_BCP, mask_B1P))
        nn.functional.cross_entropy(logits[-1], labels_B).backward()
    assert seen == [
        (1, width, BATCH * SLOTS * k, 1)
        for k, channels in CONFIGS["particlenet-lite"][0]
        for width in channels
    ]
    assert (logits[1] - logits[0]).abs().max().item() < 1e-5
    other_params = dict(other.named_parameters())
    for name, param in plain.named_parameters():
        assert (other_params[name].grad - param.grad).abs().max().item() < 1e-5, name
    other_state = other.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.allclose(other_state[name].float(), value.float(), atol=1e-6), name


def test_training_mode_backward_reaches_every_parameter() -> None:
    model = build_particlenet(NUM_FEATURES, NUM_CLASSES).train()
    points_BCP, features_BCP, mask_B1P = jet_batch()
    model(points_BCP, features_BCP, mask_B1P).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_padded_slots_do_not_change_the_output() -> None:
    model = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES).eval()
    points_BCP, features_BCP, mask_B1P = jet_batch()
    padded_B1P = mask_B1P == 0
    noisy_points_BCP = points_BCP.masked_fill(padded_B1P, 3.0)
    noisy_features_BCP = features_BCP.masked_fill(padded_B1P, -5.0)
    with torch.no_grad():
        clean_BK = model(points_BCP, features_BCP, mask_B1P)
        noisy_BK = model(noisy_points_BCP, noisy_features_BCP, mask_B1P)
    assert torch.equal(clean_BK, noisy_BK)


def test_missing_mask_means_every_slot_is_real() -> None:
    model = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES).eval()
    points_BCP, features_BCP, _ = jet_batch()
    with torch.no_grad():
        implicit_BK = model(points_BCP, features_BCP)
        explicit_BK = model(points_BCP, features_BCP, torch.ones(BATCH, 1, SLOTS))
    assert torch.equal(implicit_BK, explicit_BK)


def test_deterministic_under_deterministic_algorithms() -> None:
    points_BCP, features_BCP, mask_B1P = jet_batch()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        gradients = []
        for _ in range(2):
            torch.manual_seed(3)
            model = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES).train()
            model(points_BCP, features_BCP, mask_B1P).square().sum().backward()
            gradients.append([p.grad.clone() for p in model.parameters()])
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(*gradients, strict=True))


def test_builder_options_shape_the_network() -> None:
    model = build_particlenet(
        NUM_FEATURES, 3, k=5, conv_channels=[[8, 8], [16]], fc_dim=12, dropout=0.3
    )
    assert [block.k for block in model.edge_convs] == [5, 5]
    assert [len(block.convs) for block in model.edge_convs] == [2, 1]
    assert model.fc[0][0].out_features == 12
    assert model.fc[0][2].p == 0.3
    assert model.fc[-1].out_features == 3


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"k": 0}, "'k'"),
        ({"k": True}, "'k'"),
        ({"conv_channels": []}, "'conv_channels'"),
        ({"conv_channels": [[64, 0]]}, "'conv_channels'"),
        ({"fc_dim": 2.5}, "'fc_dim'"),
        ({"dropout": 1.0}, "'dropout'"),
    ],
)
def test_bad_option_values_are_named(options: dict[str, object], named: str) -> None:
    with pytest.raises(ModelError, match=named):
        build_particlenet(NUM_FEATURES, NUM_CLASSES, **options)  # type: ignore[arg-type]


def test_too_few_slots_for_k_is_explained() -> None:
    model = build_particlenet(NUM_FEATURES, NUM_CLASSES).eval()
    points_BCP, features_BCP, mask_B1P = (t[..., :16] for t in jet_batch())
    with pytest.raises(ModelError, match=r"k=16 needs more than 16 particle slots"):
        model(points_BCP, features_BCP, mask_B1P)


def test_float16_autocast_keeps_padding_out_of_reach() -> None:
    """The padded coordinate overflows float16, so distances must be computed in float32."""
    model = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES).eval()
    points_BCP, features_BCP, mask_B1P = jet_batch()
    with torch.no_grad():
        reference_BK = model(points_BCP, features_BCP, mask_B1P)
        with torch.autocast("cpu", dtype=torch.float16):
            logits_BK = model(points_BCP, features_BCP, mask_B1P)
    assert (logits_BK.float() - reference_BK).abs().max().item() < 1e-2


@pytest.mark.parametrize(
    ("config", "tolerance"),
    [("particlenet-lite", 1e-5), ("particlenet", 1e-4), ("same-width", 1e-4)],
)
def test_training_step_matches_weaver(config: str, tolerance: float) -> None:
    """Batch statistics, dropout, gradients and running-stat updates all agree, for two and
    three blocks with shortcut convolutions and for a block without one (sc is None).

    The decomposed first convolution rounds (W_a - W_b) x_i + W_b x_j instead of
    W_a x_i + W_b (x_j - x_i); through three blocks of backward that moves ParticleNet's
    first-block gradients (up to about 2e-2) by up to about 2e-5 in float32, hence 1e-4 there.
    """
    reference, ours = paired_models(config)
    points_BCP, features_BCP, mask_B1P = jet_batch(seed=2)
    labels_B = torch.tensor([1, 0] * (BATCH // 2))
    for model in (reference, ours):
        model.train()
        torch.manual_seed(11)
        loss = nn.functional.cross_entropy(model(points_BCP, features_BCP, mask_B1P), labels_B)
        loss.backward()
    our_params = dict(ours.named_parameters())
    for name, param in reference.named_parameters():
        assert (our_params[name].grad - param.grad).abs().max().item() < tolerance, name
    our_state = ours.state_dict()
    for name, value in reference.state_dict().items():
        assert torch.allclose(our_state[name].float(), value.float(), atol=1e-6), name


@pytest.mark.parametrize("config", ["particlenet", "particlenet-lite"])
def test_bfloat16_autocast_matches_weaver_under_the_same_autocast(config: str) -> None:
    """Mixed precision rounds differently per layout; both stay within bfloat16's reach."""
    reference, ours = paired_models(config)
    reference.eval()
    ours.eval()
    points_BCP, features_BCP, mask_B1P = jet_batch()
    with torch.no_grad():
        full_BK = reference(points_BCP, features_BCP, mask_B1P)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected_BK = reference(points_BCP, features_BCP, mask_B1P).float()
            logits_BK = ours(points_BCP, features_BCP, mask_B1P).float()
    weaver_error = (expected_BK - full_BK).abs().max().item()
    assert (logits_BK - expected_BK).abs().max().item() < 1e-2
    assert (logits_BK - full_BK).abs().max().item() < max(3 * weaver_error, 1e-2)


def test_too_few_slots_for_k_is_explained_in_training_mode() -> None:
    model = build_particlenet_lite(NUM_FEATURES, NUM_CLASSES).train()
    points_BCP, features_BCP, mask_B1P = (t[..., :7] for t in jet_batch())
    with pytest.raises(ModelError, match=r"k=7 needs more than 7 particle slots per jet, got 7"):
        model(points_BCP, features_BCP, mask_B1P)
