"""The searcher's metric is checked against what the data's validations will report, and the
background class of the multi-class rejections against the data config's classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trainyard.config import parse_experiment
from trainyard.errors import ConfigError
from trainyard.master.preflight import preflight

EXAMPLES = Path(__file__).parents[2] / "examples"
THREE_CLASSES = EXAMPLES / "configs" / "toy-three-classes.yaml"
TWO_CLASSES = EXAMPLES / "configs" / "particlenet-inputs.yaml"
THREE_CLASS_METRICS = (
    "val_loss, val_accuracy, val_auc, val_rej30, val_rej50, val_auc_macro, val_auc_is_qcd, "
    "val_auc_is_top, val_auc_is_massive, val_rej50_is_top, val_rej50_is_massive, "
    "val_rej99_is_top, val_rej99_is_massive, val_rej995_is_top, val_rej995_is_massive"
)


def _config(root: Path, metric: str, config: Path | None = THREE_CLASSES, **data: Any) -> Any:
    files = {"train": str(root / "train/*.parquet"), "val": str(root / "val/*.parquet")}
    if config is not None:
        files["config"] = str(config)
    return parse_experiment(
        {
            "name": "metrics",
            "model": "particlenet-lite",
            "data": {**files, **data},
            "searcher": {"metric": metric},
            "training": {"max_length": {"epochs": 1}},
        }
    )


def _problems(config: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    return caught.value.problems


def _with_labels(tmp_path: Path, labels: list[str]) -> Path:
    """The three-class config with other `labels.value` entries."""
    raw = yaml.safe_load(THREE_CLASSES.read_text())
    raw["labels"]["value"] = labels
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "metric", ["val_auc_macro", "val_auc_is_massive", "val_rej995_is_top", "val_accuracy"]
)
def test_any_reported_metric_can_be_the_searchers(data: Path, metric: str) -> None:
    preflight(_config(data, metric))


def test_a_misspelt_metric_gets_a_did_you_mean_and_the_list(data: Path) -> None:
    assert _problems(_config(data, "val_auc_macr")) == [
        "`searcher.metric`: no trial reports 'val_auc_macr'; did you mean 'val_auc_macro'? "
        f"this experiment's validations report {THREE_CLASS_METRICS}"
    ]


def test_per_class_metrics_need_more_than_two_classes(data: Path) -> None:
    for config in (None, TWO_CLASSES):
        assert _problems(_config(data, "val_auc_macro", config)) == [
            "`searcher.metric`: no trial reports 'val_auc_macro'; the per-class metrics are "
            "reported only with more than two classes, and the data has 2; this experiment's "
            "validations report val_loss, val_accuracy, val_auc, val_rej30, val_rej50"
        ]


def test_a_rejection_without_a_background_class_says_how_to_get_one(
    data: Path, tmp_path: Path
) -> None:
    none = _with_labels(tmp_path, ["is_light", "is_top", "is_massive"])
    problem = _problems(_config(data, "val_rej50_is_top", none))[0]
    assert problem.startswith(
        "`searcher.metric`: no trial reports 'val_rej50_is_top'; the per-class rejections are "
        "measured against a background class, but no `data.background_class` is set and of "
        "`labels.value` none is named like QCD; set it to the background's name or index; "
        "this experiment's validations report val_loss,"
    )
    several = _with_labels(tmp_path, ["is_qcd", "is_top", "is_qcd_massive"])
    problem = _problems(_config(data, "val_rej50_is_top", several))[0]
    assert "of `labels.value` several are (is_qcd, is_qcd_massive) named like QCD" in problem
    preflight(_config(data, "val_rej50_is_top", several, background_class="is_qcd_massive"))


def test_the_background_class_by_name_or_index(data: Path) -> None:
    preflight(_config(data, "val_rej50_is_qcd", background_class="is_massive"))
    preflight(_config(data, "val_rej99_is_massive", background_class=1))
    problem = _problems(_config(data, "val_rej50_is_massive", background_class="is_massive"))[0]
    assert problem.startswith(
        "`searcher.metric`: no trial reports 'val_rej50_is_massive'; is_massive is the "
        "background class, which the rejections of the other classes are measured against; "
        "this experiment's validations report"
    )


def test_an_unknown_background_class_is_named(data: Path) -> None:
    assert _problems(_config(data, "val_auc", background_class="is_qdc")) == [
        f"`data.background_class`: 'is_qdc' is not in `labels.value` of {THREE_CLASSES}; "
        "did you mean 'is_qcd'? the classes are is_qcd, is_top, is_massive (give one of these "
        "names or its index)"
    ]
    assert _problems(_config(data, "val_auc", background_class=3)) == [
        f"`data.background_class`: 3 is not a class of {THREE_CLASSES}, whose `labels.value` "
        "['is_qcd', 'is_top', 'is_massive'] has classes 0 to 2"
    ]


def test_a_background_class_with_two_classes_is_an_error(data: Path) -> None:
    expected = (
        "`data.background_class`: 0 is set, but {} has 2 classes; a background class is for "
        "the per-class rejections of more than two classes (with two, val_auc, val_rej30 and "
        "val_rej50 take data.signal_class against the other class), so remove it"
    )
    assert _problems(_config(data, "val_auc", None, background_class=0)) == [
        expected.format("the built-in inputs")
    ]
    assert _problems(_config(data, "val_auc", TWO_CLASSES, background_class=0)) == [
        expected.format(TWO_CLASSES)
    ]


def test_classes_that_share_a_metric_name_are_named(data: Path, tmp_path: Path) -> None:
    path = _with_labels(tmp_path, ["label == 0", "label == 1", "label != 0"])
    assert _problems(_config(data, "val_auc", path)) == [
        f"`data.config` ({path}): `labels.value` names the classes in metric names; "
        "'label == 0' and 'label != 0' both become the metric name suffix 'label_0': give "
        "each class a distinct name (e.g. `new_variables: {is_wide: jet_mass > 100}`, then "
        "list `is_wide`)"
    ]


def test_more_classes_than_a_report_holds(data: Path, tmp_path: Path) -> None:
    path = _with_labels(tmp_path, [f"label == {i}" for i in range(64)])
    assert (
        "`data.config`: its 64 classes make 259 validation metrics, more than the 256 one "
        "report may hold; merge classes in `labels.value`"
    ) in _problems(_config(data, "val_auc", path, background_class=0))
    preflight(_config(data, "val_auc", path))  # without rejections: 70 metrics
