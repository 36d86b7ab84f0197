"""trainyard.core: the small client a user's own training script calls.

    import trainyard.core

    with trainyard.core.init(hparams={"lr": 1e-3}) as ctx:
        start = ctx.checkpoint.latest()         # resume, or None
        for step in range(...):
            ...
            ctx.report_training(step, {"loss": loss})
            if step % 100 == 0:
                ctx.report_validation(step, {"val_loss": val_loss})
                ctx.checkpoint.save(folder, step)
            if ctx.should_stop():
                break

Run as a trial (an experiment's `entrypoint`), it speaks the Master's typed protocol over
HTTP with the attempt's credential; run by hand, it writes metrics to a JSON-lines file.
It never imports torch (docs/users/scripts.md).
"""

from trainyard.core.checkpoints import Checkpoint, CheckpointStore
from trainyard.core.context import Context, init
from trainyard.core.distributed import DistributedInfo

__all__ = ["Checkpoint", "CheckpointStore", "Context", "DistributedInfo", "init"]
