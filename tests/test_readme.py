"""Every command block of the README runs, in order, in one folder, on the tiny benchmark.

The README's numbers are sized for the demo preset; here they are scaled to the tiny one (a
few dozen faces), where a one-epoch model mines nothing at the README's floor: ``SIZES`` lists
each replacement. ``make demo`` is run as the Makefile's recipe says (``omnifer demo ...``),
``make test`` is this suite, and install lines are checked against the project's extras.
"""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: README value -> tiny-preset value
SIZES = [
    (r"--preset (demo|small)", "--preset tiny"),
    (r"demo quick --fast", "demo quick --preset tiny --fast"),
    (r'preset="demo"', 'preset="tiny"'),
    (r"--epochs \d+", "--epochs 1"),
    (r"epochs=\d+", "epochs=1"),
    (r"--images-per-class \d+", "--images-per-class 2"),
    (r"--threshold 0\.9", "--threshold -1 --leak-threshold 1 --no-calibrate --ood-quantile 0"),
    (r"MineConfig\(threshold=0\.9\)",
     "MineConfig(threshold=-1, leak_threshold=1.0, calibrate=False, ood_quantile=0)"),
    (r"pipeline\.distill\(ws\)",
     "pipeline.distill(ws, DistillConfig(images_per_class=2, with_labeled=True))"),
]

pytest.importorskip("torch")
pytest.importorskip("faiss")


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def tiny(text: str) -> str:
    for pattern, repl in SIZES:
        text = re.sub(pattern, repl, text)
    return text


def make_recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, ``$(BIN)/`` removed."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{target}:")))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(shlex.split(line.strip().replace("$(BIN)/", "")))
    return recipe


def omnifer(args: list[str]) -> None:
    from omnifer.cli.main import main

    try:
        main(["-q", *args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"omnifer {shlex.join(args)} exited with {exc.code}"


def run_line(line: str) -> None:
    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[:2] == ["make", "demo"]:
        for cmd in make_recipe("demo"):
            assert cmd[0] == "omnifer", f"make demo runs {cmd}"
            omnifer(shlex.split(tiny(shlex.join(cmd[1:]))) + ["--preset", "tiny", "--fast"])
    elif words[:2] == ["make", "test"]:
        assert any("pytest" in cmd for cmd in make_recipe("test"))
    elif words[0] == "python" and "pip" in line:  # install lines: the extras they name exist
        tomllib = pytest.importorskip("tomllib")
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"]
        for group in re.findall(r"\.\[([a-z,]+)\]", line):
            assert set(group.split(",")) <= set(extras), line
    elif words[0] == "omnifer":
        omnifer(shlex.split(tiny(line), comments=True)[1:])
    else:
        raise AssertionError(f"the README runs {line!r}; teach this test how to run it")


def test_readme_blocks_run(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["omnifer"])
    # the user's own data of the README: labeled.toml, test.toml and pool/ in the folder
    for item in Path(tiny_synth.labeled_toml).parent.iterdir():
        copy = shutil.copytree if item.is_dir() else shutil.copy
        copy(item, tmp_path / item.name)
    found = blocks(README.read_text(encoding="utf-8"))
    assert [lang for lang, _ in found].count("bash") >= 4 and ("python", ) <= tuple(
        lang for lang, _ in found if lang == "python")
    for lang, code in found:
        if lang == "python":
            code = tiny(code)
            exec(compile("from omnifer.distill import DistillConfig\n" + code, "README", "exec"),
                 {})
            continue
        for line in code.splitlines():
            run_line(line)
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "fer-mined" / "README.md").is_file()
    assert (tmp_path / "report.html").is_file()
