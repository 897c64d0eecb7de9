"""The product's wheel: the proxy's code and migrations, and nothing that exists only for tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.timing import scaled

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_proxy_without_the_simulator(tmp_path: Path) -> None:
    # Built from a copy of the tracked files, as a fresh clone would, so the checkout's own build
    # leftovers can neither help nor leak in.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    source = tmp_path / "src"
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=scaled(300))
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "proxy/main.py" in names
    assert any(name.startswith("proxy/migrations/versions/") for name in names)
    assert "proxy/static/index.html" in names
    leaked = [name for name in names
              if "simulator" in name or name.startswith(("tests/", "scripts/"))]
    assert leaked == []
