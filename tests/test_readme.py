"""The README's first screen is run as written: its shell lines, its Python and its SQL.

The quickstart stands before the README's second heading; every fenced block there runs here, in a
folder holding ``photos/portrait.jpg`` (matplotlib's real photo of Grace Hopper), with the
installed ``facepipe`` command and the shipped models. Only ``pip install`` lines are left out:
the test runs in the installed environment.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.data.schema import EMOTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
FIRST_SCREEN_LINES = 70


def first_screen() -> str:
    text = README.read_text()
    headings = [m.start() for m in re.finditer(r"^## ", text, flags=re.M)]
    assert len(headings) >= 2, "README: the quickstart is its first ## section"
    return text[: headings[1]]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def test_quickstart_fits_one_screen_and_has_every_kind_of_block():
    screen = first_screen()
    assert len(screen.splitlines()) <= FIRST_SCREEN_LINES
    assert blocks(screen, "bash") and blocks(screen, "python") and blocks(screen, "sql")


@pytest.mark.integration
def test_quickstart_runs_as_written(tmp_path):
    import matplotlib.cbook

    duckdb = pytest.importorskip("duckdb")  # a dev dependency (pyproject.toml)
    screen = first_screen()
    (tmp_path / "photos").mkdir()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as src, open(tmp_path / "photos" / "portrait.jpg", "wb") as dst:
        shutil.copyfileobj(src, dst)
    bindir = Path(sys.executable).parent
    assert (bindir / "facepipe").exists(), "pip install gives a facepipe command"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"

    ran = []
    for block in blocks(screen, "bash"):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if not command or command.startswith("pip install"):
                continue
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"README command failed: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            ran.append((command, proc.stdout))
    assert [c.split()[1] for c, _ in ran] == ["predict", "annotate", "compact"]
    assert "portrait.jpg" in ran[0][1]  # predict's table names the file

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for code in blocks(screen, "python"):
            scope: dict = {}
            exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
        for query in blocks(screen, "sql"):
            rows = duckdb.sql("\n".join(line for line in query.splitlines() if not line.startswith("--"))).fetchall()
    finally:
        os.chdir(cwd)
    faces = scope["faces"]
    assert len(faces) == 1 and faces.path.tolist() == ["portrait.jpg"]
    assert faces.emotion.iloc[0] in EMOTIONS
    assert rows and sum(n for _, n in rows) == 1  # duckdb counts the same one face
    assert any((tmp_path / "runs" / "photos" / "plots").rglob("*.jpg"))
