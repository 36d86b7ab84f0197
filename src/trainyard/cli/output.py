"""How the CLI writes: other people's text literally, paths whole, terminals and files alike.

Text that comes from workers, logs or user files (trial errors with log tails, experiment
messages, hyperparameter values, paths) goes through `rich.markup.escape` or a `Text` before
it reaches a console, so `[bold]` or `[/x]` in a log line prints as is instead of styling the
output or raising rich's MarkupError.
"""

from __future__ import annotations

from rich.console import Console

NOT_A_TERMINAL_WIDTH = 1_000_000
"""Width of a console writing to a file or a pipe: tables take their natural width."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that never breaks a printed line.

    Soft wrap leaves long lines to the terminal, so a checkpoint path copied from the screen
    or found by grep is one piece. Outside a terminal (a log file, `| tee`, a batch job) rich
    would assume 80 columns and fold table cells; there the width is unlimited instead.
    `:name:` is not turned into an emoji, since log text may contain it.
    """
    console = Console(stderr=stderr, soft_wrap=True, emoji=False)
    if not console.is_terminal:
        console.width = NOT_A_TERMINAL_WIDTH
    return console
