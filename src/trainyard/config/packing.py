"""Trial packing in the experiment file: the `resources.pack` setting and the one rule of
which hyperparameters packed trials may differ in.

Packed trials run as one fused computation (`trainyard.worker.packing`), so they must share
every tensor shape and every non-tensor setting of the model. A search may vary only what a
pack can hold per trial: the optimizer's numbers, the dropout rate and the seed.
"""

from __future__ import annotations

from collections.abc import Iterable

PACK_COMPATIBLE_HYPERPARAMETERS = frozenset({"lr", "weight_decay", "momentum", "dropout", "seed"})
"""Hyperparameters that may differ between the trials of one pack; every other one (batch_size,
k, conv_channels, fc_dim, hidden_dim, num_layers, a user model's options) changes shapes or
the model's code path."""

PACK_SETTINGS = ("auto", "off")

AUTO_PACK_SIZES = {("cuda", "particlenet-lite"): 8}
"""What `resources.pack: auto` packs, by (device kind, model): only where benchmarks/packing.py
measured a gain (docs/packing.md, "Speed": ParticleNet-Lite on an H200 gains about 1.9x at
K=8). ParticleNet only broke even on the GPU and CPU figures are unsettled, so they, like
every other pair, train one trial per worker."""


def pack_setting(value: object) -> object:
    """`resources.pack` as given: auto, off or a whole number of trials per worker.

    YAML reads a bare `off` as false; that is taken as "off".
    """
    if value is False:
        return "off"
    if value in PACK_SETTINGS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        "must be auto, off or the number of trials one worker trains together (1 or more), "
        "e.g. `pack: 4`"
    )


def shape_changing(names: Iterable[str]) -> list[str]:
    """The hyperparameters among `names` that trials of one pack cannot differ in, sorted."""
    return sorted(set(names) - PACK_COMPATIBLE_HYPERPARAMETERS)


def pack_problems(
    *, pack: str | int, searched: Iterable[str], slots_per_trial: int, amp: str
) -> list[str]:
    """What stops an explicit `resources.pack: K` (K > 1) from packing this experiment, one
    line per problem; auto packs only where it can, so it has none."""
    if not isinstance(pack, int) or pack == 1:
        return []
    allowed = ", ".join(sorted(PACK_COMPATIBLE_HYPERPARAMETERS))
    problems = [
        f"`hyperparameters.{name}`: searched, but it changes the model's tensor shapes or "
        f"code, and `resources.pack: {pack}` trains {pack} trials as one model that must "
        f"share them; make `{name}` a constant, or set `resources.pack` to auto (packs only "
        f"searches it can) or off; a pack's trials may differ only in {allowed}"
        for name in shape_changing(searched)
    ]
    if slots_per_trial > 1:
        problems.append(
            f"`resources.pack`: {pack} trials per worker need one device per pack, but "
            f"`resources.slots_per_trial` is {slots_per_trial}; set slots_per_trial to 1, or "
            "pack to off"
        )
    if amp == "fp16":
        problems.append(
            f"`training.amp`: fp16 needs a gradient scaler per trial, which `resources.pack: "
            f"{pack}` cannot keep apart; use bf16 or off, or set pack to off"
        )
    return problems


def most_auto_pack_size(model: str | None) -> int:
    """The largest pack `resources.pack: auto` may choose for `model` on any device: what the
    Master holds a pack of an `auto` experiment to, without knowing its worker's device."""
    return max((size for (_, name), size in AUTO_PACK_SIZES.items() if name == model), default=1)


def auto_pack_size(
    *, device_kind: str, model: str, searched: Iterable[str], slots_per_trial: int, amp: str
) -> tuple[int, str]:
    """The trials per worker that `resources.pack: auto` chooses, and why, in words."""
    size = AUTO_PACK_SIZES.get((device_kind, model), 1)
    if size == 1:
        return 1, f"no measured gain for {model} on {device_kind}: one trial per worker"
    problems = pack_problems(
        pack=size, searched=searched, slots_per_trial=slots_per_trial, amp=amp
    )
    if problems:
        return 1, f"this experiment cannot be packed ({problems[0]}): one trial per worker"
    return size, f"{model} on {device_kind} gains from packing: {size} trials per worker"
