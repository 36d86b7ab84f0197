"""The leader election of `trainyard server` replicas, on a real PostgreSQL: one lock, one
leader, and the lock freed when the leader's session ends (closed, or cut by the server)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.integration.helpers import wait_for
from trainyard.master.leadership import (
    LOCK_KEY,
    AdvisoryLeadership,
    Leadership,
    leadership_for,
)


@pytest.fixture
def replicas(postgresql_url: str) -> Iterator[tuple[AdvisoryLeadership, AdvisoryLeadership]]:
    url = make_url(postgresql_url)
    first = AdvisoryLeadership(url, identity="trainyard pid 1 http://a:8080")
    second = AdvisoryLeadership(url, identity="trainyard pid 2 http://b:8080")
    yield first, second
    first.close()
    second.close()


def test_one_leads_the_other_follows_and_sees_who_leads(
    replicas: tuple[AdvisoryLeadership, AdvisoryLeadership], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = replicas
    caplog.set_level(logging.INFO, logger="trainyard.master.leadership")
    assert first.poll()
    assert first.poll()  # checking again keeps it
    assert not second.poll()
    assert not second.poll()
    assert second.holder() == first.holder() == "trainyard pid 1 http://a:8080"
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"leading: this server (trainyard pid 1 http://a:8080) holds advisory lock {LOCK_KEY}",
        "following (leader is trainyard pid 1 http://a:8080)",  # once, not every tick
    ]


def test_closing_the_leader_frees_the_lock_for_a_follower(
    replicas: tuple[AdvisoryLeadership, AdvisoryLeadership],
) -> None:
    first, second = replicas
    assert first.poll()
    assert not second.poll()
    first.close()
    # The server ends the session (and frees the lock) a moment after the client closes it:
    # a follower takes over at one of its next ticks.
    wait_for(second.poll, timeout=10, what="the follower to take the freed lock")
    assert second.holder() == "trainyard pid 2 http://b:8080"
    assert not first.poll()  # a closed leader may come back, as a follower


def test_a_leader_whose_session_ends_stops_leading_and_a_follower_takes_over(
    replicas: tuple[AdvisoryLeadership, AdvisoryLeadership],
    postgresql_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a dead leader's host looks like from PostgreSQL: its session is gone."""
    first, second = replicas
    assert first.poll()
    assert not second.poll()
    admin = create_engine(postgresql_url)
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'trainyard pid 1 http://a:8080'"
                )
            ).scalars()
            assert list(ended) == [True]
    finally:
        admin.dispose()
    wait_for(second.poll, timeout=10, what="the follower to take the lock of the ended session")
    with caplog.at_level(logging.ERROR, logger="trainyard.master.leadership"):
        assert not first.poll()
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "no longer leading: the lock connection to PostgreSQL failed ("
    )
    assert record.getMessage().endswith("scheduling stopped, another server takes over")
    assert not first.poll()  # reconnected, now a follower
    assert first.holder() == "trainyard pid 2 http://b:8080"


def test_a_long_identity_is_cut_to_what_postgresql_keeps(postgresql_url: str) -> None:
    long = "trainyard pid 123456 https://" + "very-long-host-name." * 5 + "example.org:8443"
    leader = AdvisoryLeadership(make_url(postgresql_url), identity=long)
    try:
        assert leader.poll()
        assert leader.holder() == long[:63] == leader.identity
    finally:
        leader.close()


def test_an_unreachable_postgresql_means_following(
    caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    url = make_url(f"postgresql+psycopg://nobody@/trainyard?host={tmp_path}")
    follower = AdvisoryLeadership(url, identity="trainyard pid 3 http://c:8080")
    try:
        with caplog.at_level(logging.WARNING, logger="trainyard.master.leadership"):
            assert not follower.poll()
            assert not follower.poll()
        (record,) = caplog.records  # once per outage, not every tick
        assert record.getMessage().startswith("following: cannot reach PostgreSQL (")
        assert follower.holder() is None
    finally:
        follower.close()


def test_sqlite_has_no_election(tmp_path: object) -> None:
    sole = leadership_for(make_url(f"sqlite:///{tmp_path}/trainyard.db"), server_url="http://x")
    assert type(sole) is Leadership
    assert sole.poll()
    sole.close()
