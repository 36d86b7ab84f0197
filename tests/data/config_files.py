"""The weaver data configs the tests read: all written for trainyard, none copied from elsewhere.

``WRAP``: manual standardisation, wrap and constant padding, a per-jet group, a selection that
keeps every toy jet. ``AUTO_WEIGHTED``: auto standardisation for some features and histogram
reweighting (copy it before training: weaver-style, the completed config is written next to
it). ``EXAMPLE``: the example experiment's config, which builds the built-in inputs.
``PART_EXAMPLE``: the same features with Lorentz vectors instead of points, for Particle
Transformer.
"""

from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
WRAP = CONFIGS / "jets-wrap.yaml"
AUTO_WEIGHTED = CONFIGS / "jets-auto-weighted.yaml"
EXAMPLE = Path(__file__).parents[2] / "examples" / "configs" / "particlenet-inputs.yaml"
PART_EXAMPLE = EXAMPLE.with_name("part-inputs.yaml")
