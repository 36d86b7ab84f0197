"""One background thread that hands the Master's trial records to each experiment's trackers.

Trackers are slow (an MLflow server answers in tens of milliseconds at best, and an unreachable
one only after its timeout), so nothing here runs on the request path: the Master enqueues a
record and goes on. A tracker that fails is named in one warning and dropped for the rest of
this Master's life; the store keeps every metric, so training never depends on a tracker.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from trainyard.config.tracking import TrackingSpec
from trainyard.tracking.events import Sink, TrackingEvent

logger = logging.getLogger(__name__)

SinkFactory = Callable[[TrackingSpec, str, int], list[Sink]]


@dataclass(frozen=True)
class _Configure:
    experiment_id: int
    experiment_name: str
    spec: TrackingSpec


_STOP = object()


class Tracking:
    """Per-experiment trackers fed in order from a queue, by a thread started on first use."""

    def __init__(self, build_sinks: SinkFactory | None = None) -> None:
        self._build_sinks = build_sinks or _default_sinks
        self._queue: queue.Queue[object] = queue.Queue()
        self._configured: set[int] = set()
        self._sinks: dict[int, list[Sink]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def configure(self, experiment_id: int, experiment_name: str, spec: TrackingSpec) -> None:
        """Set up an experiment's trackers (once; later calls are ignored)."""
        with self._lock:
            if experiment_id in self._configured:
                return
            self._configured.add(experiment_id)
            if spec.mlflow is None and spec.tensorboard is None:
                return
            self._start()
        self._queue.put(_Configure(experiment_id, experiment_name, spec))

    def is_configured(self, experiment_id: int) -> bool:
        with self._lock:
            return experiment_id in self._configured

    def emit(self, event: TrackingEvent) -> None:
        """Queue a record for the experiment's trackers; free when it has none."""
        with self._lock:
            if self._thread is None:
                return
        self._queue.put(event)

    def close(self, timeout_s: float = 60.0) -> None:
        """Deliver what is queued (for at most `timeout_s`), then close every tracker."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning(
                "trackers did not take every record within %.0f s; the rest are only in "
                "trainyard's store",
                timeout_s,
            )

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver, name="tracking", daemon=True)
            self._thread.start()

    def _deliver(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, _Configure):
                self._set_up(item)
            else:
                self._hand_over(item)  # type: ignore[arg-type]
        for sinks in self._sinks.values():
            for sink in sinks:
                self._call(sink, sink.close)

    def _set_up(self, item: _Configure) -> None:
        try:
            sinks = self._build_sinks(item.spec, item.experiment_name, item.experiment_id)
        except Exception as error:
            logger.warning(
                "experiment %d: its trackers could not be set up (%s); training goes on and "
                "every metric stays in trainyard's store",
                item.experiment_id,
                _one_line(error),
            )
            return
        self._sinks[item.experiment_id] = sinks

    def _hand_over(self, event: TrackingEvent) -> None:
        sinks = self._sinks.get(event.experiment_id, [])
        for sink in list(sinks):
            if not self._call(sink, sink.handle, event):
                sinks.remove(sink)

    @staticmethod
    def _call(sink: Sink, action: Callable[..., None], *args: object) -> bool:
        try:
            action(*args)
        except Exception as error:
            logger.warning(
                "%s failed (%s); trainyard stops sending to it until the Master restarts, "
                "training goes on and every metric stays in trainyard's store",
                sink.description,
                _one_line(error),
            )
            return False
        return True


_PACKAGES = {
    "mlflow": ("mlflow", "mlflow-skinny"),
    "tensorboard": ("tensorboardX", "tensorboardX"),
}
"""Section -> (module it imports, package that provides it)."""


def setup_problems(spec: TrackingSpec) -> list[str]:
    """Trackers the section names whose library is not installed, one line each, so the
    run stops before it starts rather than dropping the tracker with a warning later."""
    problems = []
    for section, (module, package) in _PACKAGES.items():
        if getattr(spec, section) is not None and importlib.util.find_spec(module) is None:
            problems.append(
                f"`tracking.{section}`: needs the {package} package, which is not installed "
                "where the Master runs; install it with `pip install 'trainyard[tracking]'`, "
                f"or remove `tracking.{section}`"
            )
    return problems


def _default_sinks(spec: TrackingSpec, experiment_name: str, experiment_id: int) -> list[Sink]:
    """The trackers the section names; each imports its library only when used."""
    sinks: list[Sink] = []
    if spec.tensorboard is not None:
        from trainyard.tracking.tensorboard_sink import TensorBoardSink

        sinks.append(TensorBoardSink(spec.tensorboard, experiment_name, experiment_id))
    if spec.mlflow is not None:
        from trainyard.tracking.mlflow_sink import MlflowSink

        mlflow = spec.mlflow
        sink = _guarded(lambda: MlflowSink(mlflow, experiment_name), mlflow.uri)
        if sink is not None:
            sinks.append(sink)
    return sinks


def _guarded(build: Callable[[], Sink], uri: str) -> Sink | None:
    """An MLflow store that cannot be reached costs its sink, not the TensorBoard one."""
    try:
        return build()
    except Exception as error:
        logger.warning(
            "MLflow at %s cannot be reached (%s); trainyard does not send to it until the "
            "Master restarts, training goes on and every metric stays in trainyard's store",
            uri,
            _one_line(error),
        )
        return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
