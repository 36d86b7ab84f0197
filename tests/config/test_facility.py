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
        ({"executor": "lsf"}, "'lsf' is not allowed; use one of 'local', 'slurm' or 'kubernetes'"),
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


KUBERNETES_EXAMPLE = EXAMPLE.parents[1] / "kubernetes" / "base" / "config" / "facility.yaml"
K8S = {
    "namespace": "trials",
    "image": "registry.example.org/trainyard:0.1",
    "volumes": {"data": {"claim": "trainyard-data", "mount_path": "/trainyard"}},
}


def _k8s_pool(**fields: object) -> dict[str, object]:
    return {"pools": {"p": {"executor": "kubernetes", "kubernetes": {**K8S, **fields}}}}


def test_kubernetes_example_facility_validates() -> None:
    facility = load_facility(KUBERNETES_EXAMPLE)
    pool = facility.pool("h100").kubernetes
    assert pool is not None and pool.slots_per_pod == 8 and pool.kueue_queue == "hep-ml"
    assert facility.pool("cpu").kubernetes.slots_per_pod == 4


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"gpus_per_pod": 8, "gpus_per_node": 4},
            "`pools.p.kubernetes`: gpus_per_pod (8) exceeds gpus_per_node (4): such a pod fits "
            "no node; lower gpus_per_pod (larger trials span several pods)",
        ),
        ({"namespace": "HEP_Trials"}, "`pools.p.kubernetes.namespace`: String should match"),
        ({"memory_per_gpu": "64GB"}, "`pools.p.kubernetes.memory_per_gpu`: String should match"),
        (
            {"tolerations": [{"operator": "Exists", "value": "x"}]},
            "`pools.p.kubernetes.tolerations.0`: operator Exists takes no value",
        ),
        (
            {"tolerations": [{"key": "gpu", "effect": "NoRun"}]},
            "`pools.p.kubernetes.tolerations.0.effect`: 'NoRun' is not allowed",
        ),
        ({"node_selector": {"gpu type": "h100"}}, "`pools.p.kubernetes.node_selector.gpu type"),
        (
            {"pod_spec": {"containers": [], "restartPolicy": "Always", "hostNetwork": True}},
            "`pools.p.kubernetes.pod_spec`: trainyard sets containers, restartPolicy of the pod "
            "spec itself (containers: use image, gpus_per_pod",
        ),
        ({"pod_spec": ["hostNetwork"]}, "`pools.p.kubernetes.pod_spec`: "),
        (
            {"in_cluster": True, "context": "prod"},
            "in_cluster uses the pod's service account; remove kubeconfig/context",
        ),
        ({"gpus_per_pod": 4, "ranks_per_pod": 2}, "ranks_per_pod is for CPU-only pools"),
        ({"max_pods": 2, "max_pods_per_trial": 4}, "max_pods_per_trial (4) exceeds max_pods (2)"),
        ({"volumes": {"data": {"claim": "d", "mount_path": "rel"}}}, "mount_path`: String"),
        ({"kueue_queue": "HEP queue"}, "`pools.p.kubernetes.kueue_queue`: String should match"),
    ],
)
def test_each_kubernetes_pool_mistake_has_its_message(fields: dict, expected: str) -> None:
    assert expected in _problems(_k8s_pool(**fields))


def test_kubernetes_pool_needs_its_section_and_keys() -> None:
    message = _problems({"pools": {"p": {"executor": "kubernetes"}}})
    assert "executor kubernetes needs a `kubernetes:` section (namespace, image, ...)" in message
    message = _problems({"pools": {"p": {"executor": "kubernetes", "kubernetes": {}}}})
    for key in ("namespace", "image", "volumes"):
        assert f"`pools.p.kubernetes.{key}`" in message
    message = _problems({"pools": {"p": {"kubernetes": K8S}}})
    assert "a `kubernetes:` section needs executor: kubernetes" in message
    message = _problems(_k8s_pool(gpus_per_pd=2))
    assert "`pools.p.kubernetes.gpus_per_pd`: unknown key 'gpus_per_pd'; did you mean " in message
