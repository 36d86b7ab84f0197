"""The one did-you-mean helper: which name it offers, and the text it returns."""

import ast
from pathlib import Path

import trainyard
from trainyard.suggest import closest_name, did_you_mean

MODELS = ["particlenet", "particlenet-lite", "mlp"]


def test_the_closest_similar_name_is_offered() -> None:
    assert closest_name("particlenet-lit", MODELS) == "particlenet-lite"
    assert closest_name("mpl", MODELS) == "mlp"
    assert closest_name("transformer", MODELS) is None
    assert closest_name(3, ["3a"]) == "3a"  # non-string names (YAML keys) are compared as text


def test_hint_text_fits_inside_a_message() -> None:
    assert did_you_mean("bach_size", ["batch_size", "lr"]) == "did you mean 'batch_size'? "
    assert did_you_mean("zzz", ["batch_size", "lr"]) == ""


def test_hint_text_with_its_own_punctuation() -> None:
    hint = did_you_mean("part_pxx", ["part_px"], before="; ", after="")
    assert hint == "; did you mean 'part_px'?"
    sentence = did_you_mean("mpl", MODELS, before=". ", after="", sentence=True)
    assert sentence == ". Did you mean 'mlp'?"
    assert did_you_mean("zzz", MODELS, before=". ", after="", sentence=True) == ""


def test_choices_may_be_any_iterable_of_names() -> None:
    assert did_you_mean("gpu1", {"gpu": 1, "cpu": 2}) == "did you mean 'gpu'? "
    assert did_you_mean("gpu1", (name for name in ["gpu", "cpu"])) == "did you mean 'gpu'? "


def test_no_other_module_matches_names_itself() -> None:
    """Every suggestion goes through trainyard.suggest, so all messages offer names alike."""
    root = Path(trainyard.__file__).parent
    users = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "suggest.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if "difflib" in names:
                users.append(str(path.relative_to(root)))
    assert users == []
