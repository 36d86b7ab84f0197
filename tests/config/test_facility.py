"""The facility file: what loads, the default, and the message each mistake gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainyard.config.facility import load_facility, parse_facility
from trainyard.errors import ConfigError
from trainyard.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "deploy" / "slurm" / "facility.example.yaml"
SLURM_POOL = {"executor": "slurm", "slurm": {"partition": "gpu", "gpus_per_node": 4}}


def _problems(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_facility(raw)
    return str(caught.value)


def test_example_facility_validates() -> None:
    facility = load_facility(EXAMPLE)
    assert facility.pool("a100").slurm is not None
    assert facility.pool("a100").slurm.slots_per_node == 4
    assert facility.pool("cpu").slurm.slots_per_node == 16
    assert facility.source == f"facility file {EXAMPLE}"


def test_without_a_file_there_is_one_local_pool() -> None:
    facility = load_facility(None)
    assert list(facility.pools) == ["default"]
    assert facility.pool("default").executor == "local"


def test_settings_read_the_facility_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAINYARD_FACILITY", str(EXAMPLE))
    assert Settings().facility == EXAMPLE


def test_unknown_pool_lists_the_pools_with_did_you_mean() -> None:
    facility = parse_facility({"pools": {"default": {}, "a100": SLURM_POOL}})
    with pytest.raises(ConfigError) as caught:
        facility.pool("a10")
    assert "`resources.pool`: no pool 'a10' in facility file; did you mean 'a100'? " in str(
        caught.value
    )
    assert "pools: a100, default" in str(caught.value)


def test_misspelt_keys_get_did_you_mean_at_every_level() -> None:
    message = _problems(
        {
            "pools": {
                "a100": {"executor": "slurm", "slurm": {"partition": "gpu", "gpus_per_nod": 4}},
                "local": {"exector": "local"},
            }
        }
    )
    assert "`pools.a100.slurm.gpus_per_nod`: unknown key 'gpus_per_nod'; did you mean " in message
    assert "`pools.local.exector`: unknown key 'exector'; did you mean 'executor'?" in message


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ({"executor": "slurm"}, "executor slurm needs a `slurm:` section"),
        ({"executor": "lsf"}, "'lsf' is not allowed; use one of 'local' or 'slurm'"),
        ({"slurm": {"partition": "gpu", "gpus_per_node": 4}}, "needs executor: slurm"),
        ({"executor": "slurm", "slurm": {"partition": "cpu"}}, "needs tasks_per_node"),
        (
            {
                "executor": "slurm",
                "slurm": {"partition": "g", "gpus_per_node": 4, "tasks_per_node": 2},
            },
            "tasks_per_node is for CPU-only pools",
        ),
        (
            {
                "executor": "slurm",
                "slurm": {"partition": "g", "gpus_per_node": 4, "mem_per_gpu": "lots"},
            },
            "`pools.p.slurm.mem_per_gpu`: String should match pattern",
        ),
        (
            {
                "executor": "slurm",
                "slurm": {"partition": "g", "gpus_per_node": 4, "time_limit": "1 day"},
            },
            "`pools.p.slurm.time_limit`",
        ),
        (
            {
                "executor": "slurm",
                "slurm": {"partition": "g", "gpus_per_node": 4, "max_nodes_per_trial": 4},
            },
            "max_nodes_per_trial (4) exceeds max_nodes (1)",
        ),
    ],
)
def test_each_pool_mistake_has_its_message(pool: dict, expected: str) -> None:
    assert expected in _problems({"pools": {"p": pool}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file: .*TRAINYARD_FACILITY"):
        load_facility(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML: line"):
        load_facility(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"pools": {}}))
    with pytest.raises(ConfigError, match="`pools`"):
        load_facility(empty)
