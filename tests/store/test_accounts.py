"""Users, projects, memberships and API tokens on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from trainyard.protocol import ProjectRole
from trainyard.store import Store, accounts, create_experiment, list_experiments, utcnow


def test_a_user_is_created_once_per_issuer_and_subject(store: Store) -> None:
    with store.session() as session:
        first = accounts.sign_in_user(session, issuer="https://a", subject="s1", username="al")
        again = accounts.sign_in_user(session, issuer="https://a", subject="s1", username="alice")
        other = accounts.sign_in_user(session, issuer="https://b", subject="s1")
        assert first.id == again.id != other.id
        assert again.username == "alice" and again.last_seen_at is not None
        by_name = accounts.find_user_by_name(session, issuer="https://a", name="alice")
        assert by_name is not None and by_name.id == first.id


def test_memberships_give_one_role_per_project(store: Store) -> None:
    with store.session() as session:
        user = accounts.sign_in_user(session, issuer="https://a", subject="s1")
        cms, atlas = (accounts.create_project(session, name=n) for n in ("cms", "atlas"))
        accounts.set_membership(
            session, project_id=cms.id, user_id=user.id, role=ProjectRole.VIEWER
        )
        accounts.set_membership(
            session, project_id=cms.id, user_id=user.id, role=ProjectRole.ADMIN
        )
        assert accounts.roles_of_user(session, user_id=user.id) == {cms.id: ProjectRole.ADMIN}
        assert [r for _, r in accounts.list_members(session, project_id=cms.id)] == ["admin"]
        assert not accounts.remove_membership(session, project_id=atlas.id, user_id=user.id)
        assert accounts.remove_membership(session, project_id=cms.id, user_id=user.id)
        assert accounts.role_in_project(session, project_id=cms.id, user_id=user.id) is None
        create_experiment(session, name="e", config={}, home_dir="/e", project_id=atlas.id)
        assert [e.name for e in list_experiments(session, project_ids={cms.id})] == []
        assert [e.name for e in list_experiments(session, project_ids={atlas.id})] == ["e"]


def test_project_names_and_token_hashes_are_unique(store: Store) -> None:
    with pytest.raises(IntegrityError), store.session() as session:
        accounts.create_project(session, name="default")
    with store.session() as session:
        user = accounts.sign_in_user(session, issuer="https://a", subject="s1")
    token = {
        "user_id": user.id,
        "name": "ci",
        "token_sha256": "0" * 64,
        "prefix": "typat_abcdef",
        "expires_at": utcnow() + timedelta(days=1),
    }
    with store.session() as session:
        accounts.add_api_token(session, **token)
    with pytest.raises(IntegrityError), store.session() as session:
        accounts.add_api_token(session, **token)
    with store.session() as session:
        (stored,) = accounts.list_api_tokens(session, user_id=user.id)
        assert accounts.get_api_token(session, user_id=user.id + 1, token_id=stored.id) is None
