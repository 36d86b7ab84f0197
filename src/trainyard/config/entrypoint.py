"""The experiment file's `entrypoint`: the user's own training script, run as each trial.

A script trial replaces `model`, `data` and `training`: trainyard runs the command under
torchrun's conventions and the script talks to the Master through `trainyard.core`
(docs/users/scripts.md). Environment variables given here are stored with the experiment and
shown by `trainyard show`, so values that look like secrets are refused without echoing them.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

from trainyard.config._strict import SECRET_VALUE_ERROR, Strict

RESERVED_ENV = frozenset(
    {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
)
"""torchrun's variables: trainyard sets them for each rank."""
RESERVED_ENV_PREFIX = "TRAINYARD_"
"""trainyard's own variables (Master URL, trial id, the attempt's credential)."""

_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE
)
_SECRET_VALUE = re.compile(r"^(ghp_|gho_|github_pat_|glpat-|hf_|sk-|xox[abp]-|AKIA|tyw_)")

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


def _env_value(value: Any) -> Any:
    """YAML reads `OMP_NUM_THREADS: 4` as a number; the environment holds strings."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value


def _command(value: Any) -> Any:
    """`python train.py --epochs 2` is split as a POSIX shell would, without running one."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as err:
            raise ValueError(f"cannot split the command into words: {err}") from None
    return value


class EntrypointSpec(Strict):
    """The command each trial runs instead of trainyard's built-in training loop."""

    command: Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_command)] = (
        Field(min_length=1)
    )
    """The program and its arguments, as one string (split like a shell would, but no shell
    runs it) or as a list. A program without a slash is looked up on PATH (on a local pool,
    `python` is the interpreter trainyard runs in); with a slash, relative to `workdir`."""
    workdir: str | None = None
    """The folder the command starts in; relative to the folder `trainyard` runs in, which is
    also the default."""
    environment: dict[EnvName, Annotated[str, BeforeValidator(_env_value)]] = Field(
        default_factory=dict
    )
    """Extra environment variables for the script (not secrets: the experiment file is stored
    and shown; export those in the environment trainyard starts from, which workers inherit)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`entrypoint: python train.py` is short for `entrypoint: {command: python train.py}`."""
        if isinstance(data, str | list):
            return {"command": data}
        return data

    @field_validator("environment")
    @classmethod
    def _no_reserved_or_secret(cls, environment: dict[str, str]) -> dict[str, str]:
        for name, value in environment.items():
            if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX):
                # Shown without the input: the other variables' values stay out of logs.
                raise PydanticCustomError(
                    SECRET_VALUE_ERROR,
                    f"{name} is set by trainyard for every rank (torchrun's RANK, LOCAL_RANK, "
                    "WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and every "
                    f"{RESERVED_ENV_PREFIX}* variable); remove it",
                )
            if _looks_secret(name, value):
                raise PydanticCustomError(
                    SECRET_VALUE_ERROR,
                    f"{name} looks like a secret; experiment files are stored and shown, so "
                    "export it in the environment `trainyard run` starts from instead (trial "
                    "processes inherit it) and remove it here",
                )
        return environment


def _looks_secret(name: str, value: str) -> bool:
    """A name that says secret, a value shaped like a known token, or a URL with a password."""
    if _SECRET_NAME.search(name) or _SECRET_VALUE.match(value):
        return True
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False
