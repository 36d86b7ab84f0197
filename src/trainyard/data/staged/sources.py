"""What ``stage()`` stages: sources that turn input files into chunks of fixed-shape arrays.

A source yields one ``dict[str, np.ndarray]`` per input file (lazily, so a reused staging key
costs nothing), says in ``config_text`` what decides its output (part of the staging key), and
reports in ``manifest_extra`` how the arrays were made. Two exist:

    ParticleNetSource    the built-in ParticleNet inputs (features.build_particlenet_inputs,
                         TopLandscape top_kin features): arrays points/features/mask/labels,
                         and vectors (px, py, pz, energy) when the model takes them
    WeaverConfigSource   weaver's arrays for a weaver YAML data config (weaver.pipeline):
                         _<group> per input group, _label_, observers
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.data import features
from trainyard.data.reader import read_jet_table
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.staging import DEFAULT_JETS_PER_SHARD, stage, staging_key
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.types import WeaverDataConfig
from trainyard.data.weaver.writer import to_weaver_mapping
from trainyard.errors import DataError


class ChunkSource(Protocol):
    """Input files and how they become staged arrays."""

    files: Sequence[Path]

    def config_text(self) -> str:
        """Everything besides the files that decides the arrays; goes into the staging key."""
        ...

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        """The arrays of each file in turn."""
        ...

    def manifest_extra(self) -> dict[str, Any]:
        """How the arrays were made; called after the last chunk."""
        ...

    def num_jets(self) -> int | None:
        """Jets the chunks will hold, when known without reading them (for the space check)."""
        ...


def source_key(source: ChunkSource) -> str:
    """The staging key of ``source``: its files (path, size, mtime) and its config text."""
    return staging_key(source.files, source.config_text())


def stage_source(
    source: ChunkSource,
    cache_root: Path,
    *,
    jets_per_shard: int = DEFAULT_JETS_PER_SHARD,
    on_progress: Callable[[], None] | None = None,
) -> StagedDataset:
    """Stage ``source`` under ``cache_root``, or reuse what an unchanged source staged before.

    ``on_progress`` is called after each staged file and while waiting for another process
    that stages the same key (see ``stage``).
    """
    return stage(
        source.chunks(),
        cache_root,
        key=source_key(source),
        extra_manifest=source.manifest_extra,
        num_jets=source.num_jets(),
        jets_per_shard=jets_per_shard,
        on_progress=on_progress,
    )


class ParticleNetSource:
    """The built-in ParticleNet inputs, one file at a time so memory holds one file's jets.

    With ``vectors`` (a model that takes Lorentz vectors) the array ``vectors`` is staged too;
    without it the staging key is what it was before vectors existed.
    """

    def __init__(
        self, files: Sequence[Path], *, max_particles: int, vectors: bool = False
    ) -> None:
        self.files = list(files)
        self._max_particles = max_particles
        self._vectors = vectors

    def config_text(self) -> str:
        """The settings and the feature code itself: editing features.py stages again."""
        source = Path(features.__file__).read_bytes()
        described: dict[str, Any] = {
            "producer": "particlenet",
            "max_particles": self._max_particles,
            "features_py_sha256": hashlib.sha256(source).hexdigest(),
        }
        if self._vectors:
            described["vectors"] = list(features.VECTOR_NAMES)
        return json.dumps(described, sort_keys=True)

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for file in self.files:
            table = read_jet_table([file], features.required_columns(self._vectors))
            arrays = features.build_particlenet_inputs(
                table, max_particles=self._max_particles, vectors=self._vectors
            )
            chunk = {
                "points": arrays.points_NCP,
                "features": arrays.features_NCP,
                "mask": arrays.mask_N1P,
                "labels": arrays.labels_N,
            }
            if arrays.vectors_N4P is not None:
                chunk["vectors"] = arrays.vectors_N4P
            yield chunk

    def manifest_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "producer": "particlenet",
            "max_particles": self._max_particles,
            "point_names": list(features.POINT_NAMES),
            "feature_names": list(features.FEATURE_NAMES),
            "feature_clip": features.FEATURE_CLIP,
            "labels": "1 = top, 0 = QCD",
            "files": [str(Path(file).resolve()) for file in self.files],
        }
        if self._vectors:
            extra["vector_names"] = list(features.VECTOR_NAMES)
        return extra

    def num_jets(self) -> int:
        """Rows in all files, from the Parquet footers (every row becomes one jet)."""
        total = 0
        for file in self.files:
            try:
                total += pq.read_metadata(file).num_rows
            except (pa.ArrowException, OSError) as error:
                raise DataError(
                    f"{file} is not a readable Parquet file (corrupt or truncated?): {error}; "
                    "delete it and regenerate the dataset"
                ) from error
        return total


class WeaverConfigSource:
    """weaver's arrays for a weaver YAML data config, built per file by weaver.pipeline.

    In training mode (weaver's for_training, used by its train and val loaders) the config is
    completed from all files (auto standardisation, reweighting histograms) before the first
    chunk, as weaver does; the completed config goes into the manifest. ``prepared`` is a
    config completed elsewhere, used as is: validation files must be standardised with what
    the training files gave, as weaver's val loader is (pass the training manifest's
    ``data_config``); it is then part of the staging key.
    """

    def __init__(
        self,
        files: Sequence[Path],
        config_path: Path,
        *,
        training: bool = True,
        prepared: WeaverDataConfig | None = None,
    ) -> None:
        self.files = list(files)
        self._config_path = Path(config_path)
        self._training = training
        self._prepared = prepared
        self._completed: WeaverDataConfig | None = prepared

    def config_text(self) -> str:
        try:
            text = self._config_path.read_text()
        except OSError as error:
            raise DataError(
                f"cannot read the data config {self._config_path}: {error.strerror}; "
                "give the path of a weaver data config (*.yaml)"
            ) from error
        described: dict[str, Any] = {
            "producer": "weaver-data-config",
            "config": text,
            "training": self._training,
        }
        if self._prepared is not None:
            described["prepared"] = to_weaver_mapping(self._prepared)
        return json.dumps(described, sort_keys=True)

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        # Imported here: the pipeline brings in awkward, which only staging needs, not a
        # worker that reuses staged data.
        from trainyard.data.weaver.pipeline import load_arrays, prepare_config

        if self._prepared is not None:
            self._completed = self._prepared
        elif self._training:
            self._completed = prepare_config(self.files, self._config_path)
        else:
            self._completed = load_weaver_config(self._config_path)
        for file in self.files:
            yield load_arrays([file], self._completed, training=self._training)

    def manifest_extra(self) -> dict[str, Any]:
        assert self._completed is not None, "stage() calls manifest_extra after the last chunk"
        return {
            "producer": "weaver-data-config",
            "training": self._training,
            "data_config_path": str(self._config_path.resolve()),
            "data_config": to_weaver_mapping(self._completed),
            "files": [str(Path(file).resolve()) for file in self.files],
        }

    def num_jets(self) -> None:
        """Unknown before reading: a selection may drop jets."""
        return None
