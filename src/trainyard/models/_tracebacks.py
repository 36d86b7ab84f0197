"""Tracebacks of user code with trainyard's and torch's own frames left out.

The CLI shows no traceback of its own, so an error in a user's model file carries one in its
message; frames of the import machinery or of the caller only push the user's line out of view.
"""

import traceback
from collections.abc import Collection


def user_traceback(error: BaseException, *, hidden_files: Collection[str]) -> str:
    """The formatted traceback of ``error`` without frames from ``hidden_files`` or importlib."""
    summary = traceback.TracebackException.from_exception(error)
    summary.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in summary.stack
            if not frame.filename.startswith("<frozen importlib")
            and frame.filename not in hidden_files
        ]
    )
    return "".join(summary.format()).rstrip()
