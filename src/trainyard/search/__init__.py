"""Searchers: which hyperparameters to try and when to stop a trial early."""

from trainyard.config import ExperimentConfig, SearcherName
from trainyard.errors import ConfigError
from trainyard.search.base import Decision, Searcher
from trainyard.search.single import SingleSearcher

__all__ = ["Decision", "Searcher", "SingleSearcher", "make_searcher"]


def make_searcher(config: ExperimentConfig) -> Searcher:
    """The searcher the experiment file names, or a ConfigError saying what runs today."""
    if config.searcher.name is SearcherName.SINGLE:
        return SingleSearcher(config)
    raise ConfigError(
        [
            f"`searcher.name`: {config.searcher.name.value!r} is accepted by the schema but this "
            "version of trainyard runs only `single`; set `searcher: {name: single}`"
        ]
    )
