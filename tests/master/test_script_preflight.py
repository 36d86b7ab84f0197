"""Preflight of a script trial: the program and the script exist and can run."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.config import load_experiment
from trainyard.errors import ConfigError
from trainyard.master.preflight import preflight


def _preflight(tmp_path: Path, command: str, workdir: str = ".") -> str:
    file = tmp_path / "e.yaml"
    file.write_text(f"name: e\nentrypoint:\n  command: {command}\n  workdir: {workdir}\n")
    config = load_experiment(file, base_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    return str(caught.value)


def test_a_valid_script_passes(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    file = tmp_path / "e.yaml"
    file.write_text("name: e\nentrypoint: python train.py\n")
    preflight(load_experiment(file, base_dir=tmp_path))


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    message = _preflight(tmp_path, "./train.sh")
    assert (
        f"`entrypoint.command`: program './train.sh' not found in {tmp_path}; give its path "
        "relative to `entrypoint.workdir`" in message
    )
    message = _preflight(tmp_path, "no-such-trainer --fast")
    assert "program 'no-such-trainer' not found on PATH" in message


def test_a_program_that_is_not_executable_says_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "train.sh").write_text("#!/bin/sh\necho hi\n")
    message = _preflight(tmp_path, "./train.sh")
    assert (
        f"`entrypoint.command`: program './train.sh' ({tmp_path}/train.sh) is not an "
        f"executable file; make it executable (chmod +x {tmp_path}/train.sh) or start it "
        "with its interpreter, e.g. `bash ./train.sh`" in message
    )


def test_a_missing_python_script_and_folder_are_named(tmp_path: Path) -> None:
    message = _preflight(tmp_path, "python trian.py")
    assert f"the Python script 'trian.py' is not in {tmp_path}" in message
    message = _preflight(tmp_path, "python train.py", workdir="nowhere")
    assert f"`entrypoint.workdir`: no such folder: {tmp_path / 'nowhere'}" in message
