"""Listing experiments costs the same few queries however many there are (the dashboard lists
thousands), and each listed experiment equals what reading it alone gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

from tests.master.conftest import experiment_config
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentOut


@contextmanager
def _counted(service: MasterService) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn, _cursor, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(service.store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(service.store.engine, "before_cursor_execute", count)


def _listed(service: MasterService) -> tuple[list[ExperimentOut], int]:
    with _counted(service) as statements:
        found = service.list_experiments(limit=1000)
    return found, len(statements)


def test_listing_takes_the_same_queries_for_3_or_12_experiments(
    service: MasterService, tmp_path: Path
) -> None:
    for n in range(3):
        experiment_id = service.create_experiment(experiment_config(tmp_path, f"e{n}", grid=True))
        service.create_trials(experiment_id, num_free=n)
    few, few_queries = _listed(service)
    for n in range(3, 12):
        service.create_experiment(experiment_config(tmp_path, f"e{n}"))
    many, many_queries = _listed(service)
    assert [e.name for e in few] == ["e2", "e1", "e0"]
    assert [e.num_trials for e in few] == [2, 1, 0]
    assert len(many) == 12 and many_queries == few_queries <= 6
    assert many == [service.get_experiment(e.id) for e in many]
