"""The repository is both a pip distribution and an ament_python ROS 2 package.

`colcon build` runs for real (colcon from PyPI, installed by the test set-up) on a copy of
the tracked files, and the install tree must hold what `ros2 launch theia_ros ...` needs.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theia_ros import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_every_cli_verb_has_a_module_with_the_verb_interface(verb: str) -> None:
    module = importlib.import_module(cli.COMMANDS[verb][0])
    assert callable(module.add_arguments) and callable(module.main)
    assert module.__doc__ and "theia" in module.__doc__, "verb modules document an example"


def test_theia_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in cli.COMMANDS:
        assert verb in out


def test_unknown_verb_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-verb"])
    assert exc.value.code == 2
    assert "choose from" in capsys.readouterr().err


@pytest.mark.parametrize(("typo", "verb"), [("trian-policy", "train-policy"),
                                            ("exprot", "export"), ("recrod", "record")])
def test_mistyped_verb_gets_a_suggestion(typo: str, verb: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([typo])
    assert f"did you mean {verb!r}?" in capsys.readouterr().err


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_help_examples_keep_their_line_continuations(verb: str) -> None:
    """A backslash-newline inside a plain docstring is eaten by Python, which glues the next
    line on after a run of spaces; examples must spell it ``\\\\`` to print one backslash."""
    doc = importlib.import_module(cli.COMMANDS[verb][0]).__doc__
    glued = [line for line in doc.splitlines() if re.search(r"\S {4,}--", line)]
    assert not glued, f"theia {verb} --help: collapsed continuation in {glued}"


def test_documented_export_examples_name_a_trained_policy_folder() -> None:
    """``theia export --policy P`` in the docs and help names what ``train-policy --out P``
    writes (the policy is the output folder itself, not a ``policy/`` inside it)."""
    texts = [p.read_text(encoding="utf-8") for p in [ROOT / "README.md",
                                                     *sorted((ROOT / "docs").glob("*.md"))]]
    texts += [importlib.import_module(m).__doc__ or "" for m, _ in cli.COMMANDS.values()]
    text = "\n".join(texts).replace("\\\n", " ")
    trained = set(re.findall(r"theia train-policy [^\n]*?--out (\S+)", text))
    exported = set(re.findall(r"theia export --policy (\S+)", text))
    assert exported and trained
    assert exported <= trained, f"export examples {exported - trained} are no train-policy --out"


def test_config_files_named_in_docs_and_help_exist() -> None:
    texts = [p.read_text(encoding="utf-8") for p in [ROOT / "README.md",
                                                     *sorted((ROOT / "docs").glob("*.md"))]]
    texts += [importlib.import_module(m).__doc__ or "" for m, _ in cli.COMMANDS.values()]
    named = set(re.findall(r"\bconfig/[\w.-]+\.yaml", "\n".join(texts)))
    assert "config/bag_map_widowx.yaml" in named
    assert not [n for n in named if not (ROOT / n).is_file()]


def test_train_policy_help_prints_the_example_on_separate_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train-policy", "--help"])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    at = lines.index("theia train-policy --dataset data/door --policy cnn_mlp \\")
    assert lines[at + 1].startswith("--encoder ")


def test_colcon_build_installs_launch_config_and_executables(tmp_path: Path) -> None:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail("colcon is part of the test set-up (make test-setup); it is missing")
    src = tmp_path / "src" / "theia_ros"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in tracked:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    result = subprocess.run([str(colcon), "build", "--packages-select", "theia_ros"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    share = tmp_path / "install" / "theia_ros" / "share" / "theia_ros"
    assert (share / "package.xml").is_file()
    for launch_file in (ROOT / "launch").glob("*.launch.py"):
        assert (share / "launch" / launch_file.name).is_file()
    for config in (ROOT / "config").glob("*.yaml"):
        assert (share / "config" / config.name).is_file()
    assert (share / "launch" / "widowx_door.launch.py").is_file()
    index = tmp_path / "install" / "theia_ros" / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / "theia_ros").is_file()
    lib = tmp_path / "install" / "theia_ros" / "lib" / "theia_ros"
    for exe in ("theia", "policy_node", "recorder_node", "encoder_node"):
        assert (lib / exe).is_file(), f"ros2 run theia_ros {exe} would not find it"


def _all_modules() -> list[str]:
    import pkgutil

    names = []
    for package in ("theia_ros", "policies", "training"):
        root = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return sorted(names)


# Packages that exist only with the hardware (a GPU, a ROS robot install): cannot be here.
HARDWARE_ONLY = {"tensorrt", "interbotix_xs_modules"}


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports(module: str) -> None:
    """Catches a name that moved (or a re-export a linter removed) in modules that only slow
    paths import, such as the demo pipeline."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in HARDWARE_ONLY:
            raise
        pytest.skip(f"{module} needs {exc.name}, which exists only with the hardware")
