"""weaver-core's own training command as a trainyard script trial: a recipe, not a port.

    entrypoint:
      command: >-
        python -m trainyard.core.weaver --data-train 'train/*.parquet'
        --data-config top.yaml --network-config particlenet.py --num-epochs 20 ...

The arguments are `weaver`'s, and weaver-core's `train.py` runs them in this process,
unchanged, with three hooks into its 0.5 series (checked at start, refused by name if absent):

- the TensorBoard helper weaver writes its scalars through becomes trainyard's reports: the
  per-batch loss and accuracy every `REPORT_EVERY` batches, the per-epoch training and
  validation scalars (`val_loss`, `val_accuracy`, or `val_mse`/`val_mae` in regression), plus
  `val_auc` from weaver's own ROC AUC;
- after each epoch's validation, weaver's epoch checkpoint (`_epoch-N_state.pt` and
  `_optimizer.pt`) is registered with the trial, and the searcher is asked whether to go on;
- a retried or resumed trial restores those files and passes `--load-epoch`, as a weaver user
  resumes by hand.

Steps are training batches, the unit of ASHA's rungs. A hyperparameter named like a weaver
option (`start_lr`, `batch_size`, `optimizer`...) sets that option; `network_option.<name>`
sets `--network-option <name> <value>`, the value as written there (weaver reads it with
`ast.literal_eval`, so the string "(64, 64, 128)" is a tuple). trainyard owns
`--model-prefix` (in the trial's folder), `--load-epoch` and the TensorBoard helper, so the
command must not set them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trainyard.core
from trainyard.core.context import Context
from trainyard.errors import TrainyardError
from trainyard.suggest import did_you_mean

REPORT_EVERY = 20
"""Batches between per-batch training reports."""
NETWORK_OPTION = "network_option."
STATE_FILE, OPTIMIZER_FILE, PROGRESS_FILE = "state.pt", "optimizer.pt", "trainyard-weaver.json"
MANAGED_OPTIONS = {
    "--model-prefix": "each trial's weaver files go to its own folder (ctx.output_dir/weaver)",
    "--load-epoch": "a retried or resumed trial continues from its last registered epoch",
    "--tensorboard": "weaver's scalars become the trial's metrics",
    "--tensorboard-custom-fn": "weaver's scalars become the trial's metrics",
    "--cross-validation": "each fold would be a trial of its own",
}
_SCALAR_NAMES = {"loss": "loss", "acc": "accuracy", "gradnorm": "grad_norm", "mse": "mse"}


class _StopTraining(Exception):
    """Raised from inside weaver's loop when the trial must end (ASHA, pause, SIGTERM)."""


@dataclass
class _Progress:
    """What the hooks learn from weaver while it trains."""

    batches: int = 0
    validation: dict[str, float] = field(default_factory=dict)
    batch_scalars: dict[str, float] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m trainyard.core.weaver <weaver's arguments>`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        with trainyard.core.init() as ctx:  # reports an error as the trial's outcome
            run_weaver(ctx, arguments)
    except TrainyardError as error:
        sys.exit(f"trainyard.core.weaver: {error}")


def run_weaver(ctx: Context, arguments: list[str]) -> None:
    """Run weaver-core's training on `arguments` plus the trial's, reporting to `ctx`."""
    _refuse_managed(arguments)
    from weaver import train as weaver_train  # imports torch: only when the recipe runs
    from weaver.utils.nn import tools

    prefix = ctx.output_dir / "weaver" / "net"
    progress = _Progress()
    argv = [*arguments, *hyperparameter_arguments(ctx.hparams, weaver_train.parser)]
    argv += ["--model-prefix", str(prefix), "--tensorboard", "trainyard"]
    latest = ctx.checkpoint.latest()
    if latest is not None:
        epoch, progress.batches = _restore(latest.path, prefix)
        argv += ["--load-epoch", str(epoch)]
    saved_argv = sys.argv
    sys.argv = ["weaver", *argv]
    try:
        with _hooks(tools, ctx, prefix, progress):
            weaver_train.main()
    except _StopTraining:
        pass
    finally:
        sys.argv = saved_argv


def hyperparameter_arguments(
    hparams: Mapping[str, Any], parser: argparse.ArgumentParser
) -> list[str]:
    """weaver options for the trial's hyperparameters, appended so that they win.

    Raises:
        TrainyardError: a name that is neither a weaver option nor `network_option.<name>`.
    """
    options = {
        action.dest: action
        for action in parser._actions  # argparse has no public list of its options
        if action.option_strings
    }
    arguments: list[str] = []
    for name, value in hparams.items():
        if name.startswith(NETWORK_OPTION) and len(name) > len(NETWORK_OPTION):
            # As on weaver's command line: weaver reads the value with ast.literal_eval.
            arguments += ["--network-option", name[len(NETWORK_OPTION) :], str(value)]
            continue
        action = options.get(name.replace("-", "_"))
        if action is None or any(flag in MANAGED_OPTIONS for flag in action.option_strings):
            hint = did_you_mean(name, sorted(options), before=" (", after=")")
            raise TrainyardError(
                f"hyperparameter {name!r} is not an option of weaver's train.py{hint}; name "
                "it as weaver's option with underscores (start_lr for --start-lr), or "
                f"{NETWORK_OPTION}<name> for --network-option <name> <value>"
            )
        arguments += _option(action, value)
    return arguments


def _option(action: argparse.Action, value: Any) -> list[str]:
    """`--start-lr 0.01`; a switch given or left out; `--use-amp` or `--no-use-amp`."""
    long = [flag for flag in action.option_strings if flag.startswith("--")]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [long[0] if value else long[1]]
    if action.nargs == 0:  # store_true
        return [long[0]] if value else []
    return [long[0], str(value)]


def _refuse_managed(arguments: list[str]) -> None:
    for argument in arguments:
        option = argument.split("=", 1)[0]
        if option in MANAGED_OPTIONS:
            raise TrainyardError(
                f"the command sets {option}, which trainyard's weaver recipe sets itself: "
                f"{MANAGED_OPTIONS[option]}; remove it from `entrypoint.command`"
            )


def _restore(checkpoint: Path, prefix: Path) -> tuple[int, int]:
    """Put a registered epoch back where `--load-epoch` reads it; (epoch, batches)."""
    progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
    epoch, batches = int(progress["epoch"]), int(progress["batches"])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint / STATE_FILE, f"{prefix}_epoch-{epoch}_state.pt")
    shutil.copy2(checkpoint / OPTIMIZER_FILE, f"{prefix}_epoch-{epoch}_optimizer.pt")
    return epoch, batches


def _register(ctx: Context, prefix: Path, epoch: int, batches: int) -> None:
    """Copy weaver's files of `epoch` into a folder and register it at step `batches`."""
    if not ctx.distributed.is_chief:
        return
    folder = Path(tempfile.mkdtemp(prefix=".weaver-epoch-", dir=prefix.parent))
    shutil.copy2(f"{prefix}_epoch-{epoch}_state.pt", folder / STATE_FILE)
    shutil.copy2(f"{prefix}_epoch-{epoch}_optimizer.pt", folder / OPTIMIZER_FILE)
    (folder / PROGRESS_FILE).write_text(json.dumps({"epoch": epoch, "batches": batches}))
    ctx.checkpoint.save(folder, batches)


# -- the hooks -------------------------------------------------------------------------------

_HOOKED = (
    "TensorboardHelper",
    "evaluate_metrics",
    "evaluate_classification",
    "evaluate_regression",
)


@contextmanager
def _hooks(tools: Any, ctx: Context, prefix: Path, progress: _Progress) -> Iterator[None]:
    """Replace weaver's TensorBoard helper and wrap its evaluation for the run's duration."""
    missing = [name for name in _HOOKED if not hasattr(tools, name)]
    if missing:
        raise TrainyardError(
            "trainyard's weaver recipe supports weaver-core 0.5; this weaver.utils.nn.tools "
            f"has no {', '.join(missing)}: install weaver-core>=0.5.3,<0.6"
        )
    replaced = {name: getattr(tools, name) for name in _HOOKED}
    tools.TensorboardHelper = _helper_class(ctx, progress)
    tools.evaluate_metrics = _capturing_metrics(replaced["evaluate_metrics"], progress)
    for name in ("evaluate_classification", "evaluate_regression"):
        setattr(tools, name, _validating(replaced[name], ctx, prefix, progress))
    try:
        yield
    finally:
        for name, original in replaced.items():
            setattr(tools, name, original)


def _helper_class(ctx: Context, progress: _Progress) -> type:
    class ReportingHelper:
        """Takes weaver's TensorBoard scalars (weaver builds it on its chief rank only)."""

        def __init__(self, tb_comment: str, tb_custom_fn: str | None) -> None:
            self.custom_fn = None
            self.global_step = progress.batches
            self.batch_train_count = 0

        def write_scalars(self, write_info: list[tuple[str, Any, int]]) -> None:
            _take_scalars(ctx, progress, write_info)

    return ReportingHelper


def _take_scalars(ctx: Context, progress: _Progress, scalars: list[tuple[str, Any, int]]) -> None:
    """Sort one `write_scalars` call by weaver's tags: "Loss/train" (a batch), "Loss/train
    (epoch)", "Loss/eval (epoch)"; the test-time tags are left alone."""
    training_epoch: dict[str, float] = {}
    one_batch, epoch = False, None
    for tag, value, step in scalars:
        quantity, _, where = tag.partition("/")
        name = _SCALAR_NAMES.get(quantity.lower(), quantity.lower())
        if where == "train":
            progress.batch_scalars[name] = float(value)
            one_batch = True
        elif where == "train (epoch)":
            training_epoch[f"train_{name}"], epoch = float(value), step
        elif where == "eval (epoch)":
            progress.validation[f"val_{name}"] = float(value)
    if one_batch:
        progress.batches += 1
        if progress.batches % REPORT_EVERY == 0:
            ctx.report_training(progress.batches, progress.batch_scalars)
    if training_epoch:
        ctx.report_training(progress.batches, training_epoch, epoch=epoch)


def _capturing_metrics(original: Callable[..., dict[str, Any]], progress: _Progress) -> Callable:
    def evaluate_metrics(y_true: Any, y_score: Any, eval_metrics: Any = ()) -> dict[str, Any]:
        results = original(y_true, y_score, eval_metrics=list(eval_metrics))
        auc = _auc(results)
        if auc is not None:
            progress.validation["val_auc"] = auc
        return results

    return evaluate_metrics


def _auc(results: Mapping[str, Any]) -> float | None:
    """weaver's one-vs-one ROC AUC; with two classes its scalar fails, and entry (0, 1) of its
    matrix (class 1 against class 0) is the same number."""
    scalar = results.get("roc_auc_score")
    if isinstance(scalar, int | float):
        return float(scalar)
    matrix = results.get("roc_auc_score_matrix")
    if getattr(matrix, "shape", None) == (2, 2):
        return float(matrix[0, 1])
    return None


def _validating(original: Callable[..., Any], ctx: Context, prefix: Path, progress: _Progress):
    def evaluate(model: Any, test_loader: Any, dev: Any, epoch: Any, *args: Any, **kwargs: Any):
        for_training = kwargs.get("for_training", args[0] if args else True)
        progress.validation.clear()
        result = original(model, test_loader, dev, epoch, *args, **kwargs)
        if not for_training:
            return result
        if ctx.distributed.is_chief:
            ctx.report_validation(progress.batches, dict(progress.validation), epoch=int(epoch))
        _register(ctx, prefix, int(epoch), progress.batches)
        if ctx.should_stop():
            raise _StopTraining
        return result

    return evaluate


if __name__ == "__main__":
    main()
