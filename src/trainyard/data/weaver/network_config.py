"""The data-config object a weaver-core network file's ``get_model(data_config, **kwargs)``
reads.

weaver-core hands network files its ``DataConfig``; the files in use (the ParticleNet and
Particle Transformer examples, CMS taggers) read only its description of the inputs and
labels. ``NetworkDataConfig`` carries those attributes with weaver's names, types and values,
built from trainyard's parsed ``WeaverDataConfig``, so such a file runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainyard.data.weaver.types import SimpleLabels, WeaverDataConfig

LABEL_NAME = "_label_"
"""weaver's name of the class index of simple labels."""


@dataclass(frozen=True)
class NetworkDataConfig:
    """The attributes of weaver-core's ``DataConfig`` that network files read."""

    input_names: tuple[str, ...]
    """The input groups in the config's order: the positional arguments of the forward."""
    input_dicts: dict[str, list[str]]
    """Group -> its variable names, in order."""
    input_shapes: dict[str, tuple[int, int, int | None]]
    """Group -> (-1, variables, length), weaver's per-batch shape."""
    label_type: str
    label_value: list[str]
    """The class expressions of ``labels.value``; ``len(label_value)`` is the class count."""
    label_names: tuple[str, ...]
    observer_names: tuple[str, ...]
    monitor_variables: tuple[str, ...]
    z_variables: tuple[str, ...]
    """Observers if any, else monitor variables (as weaver sets it)."""
    selection: str | None
    test_time_selection: str | None

    @classmethod
    def from_config(cls, config: WeaverDataConfig) -> NetworkDataConfig:
        """weaver's view of ``config``; its labels must be simple (model_inputs checks)."""
        assert isinstance(config.labels, SimpleLabels), "network files train simple labels"
        return cls(
            input_names=tuple(group.name for group in config.inputs),
            input_dicts={group.name: list(group.variable_names) for group in config.inputs},
            input_shapes={
                group.name: (-1, len(group.variables), group.length) for group in config.inputs
            },
            label_type="simple",
            label_value=list(config.labels.classes),
            label_names=(LABEL_NAME,),
            observer_names=config.observers,
            monitor_variables=config.monitor_variables,
            z_variables=config.observers or config.monitor_variables,
            selection=config.selection,
            test_time_selection=config.test_time_selection or config.selection,
        )
