"""The base of every experiment-file section, and the error kind that must not echo its input."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every section: unknown keys are errors (with a did-you-mean), values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SECRET_VALUE_ERROR = "secret_in_value"
"""The type of a validation error raised for a value that holds a secret: its message is shown
without the usual "(got <input>)", so the secret stays out of terminals and logs."""

SECTION_ERROR = "section_for_kind"
"""The type of a validation error for a section that is missing for a built-in model or given
for a script trial: its message says which, and is shown as it is."""
