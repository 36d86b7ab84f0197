"""Searchers: which hyperparameters to try and when to stop a trial early."""

from trainyard.config import ExperimentConfig, SearcherName
from trainyard.search.base import Decision, Proposal, Searcher, TrialResult
from trainyard.search.optuna_searcher import OptunaSearcher, check_search
from trainyard.search.single import SingleSearcher

__all__ = [
    "Decision",
    "OptunaSearcher",
    "Proposal",
    "Searcher",
    "SingleSearcher",
    "TrialResult",
    "make_searcher",
    "validate_searcher",
]


def validate_searcher(config: ExperimentConfig) -> None:
    """Raise ConfigError for search settings that cannot run, before anything is created."""
    if config.searcher.name is SearcherName.SINGLE:
        SingleSearcher(config)
    else:
        check_search(config)


def make_searcher(config: ExperimentConfig, *, storage_url: str, experiment_id: int) -> Searcher:
    """The searcher the experiment file names; Optuna ones keep their study in `storage_url`."""
    if config.searcher.name is SearcherName.SINGLE:
        return SingleSearcher(config)
    return OptunaSearcher(
        config, storage_url=storage_url, study_name=f"trainyard-experiment-{experiment_id}"
    )
