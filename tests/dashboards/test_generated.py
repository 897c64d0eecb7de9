"""The committed dashboards, rules and textfiles are exactly what dashboards/build.py writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dashboards import build
from tests.dashboards.paths import DASHBOARD_FILES, REPO_ROOT, RULE_FILES, TEXTFILES
from tests.support.timing import scaled


def test_regenerating_changes_nothing() -> None:
    files = build.render()
    assert build.stale(files) == [], "run: .venv/bin/python dashboards/build.py"
    # Every generated file is committed, and nothing generated-looking is left over.
    assert set(DASHBOARD_FILES) | set(RULE_FILES) | set(TEXTFILES) == set(files)


def test_the_check_mode_runs_as_a_plain_script() -> None:
    done = subprocess.run([sys.executable, "dashboards/build.py", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=scaled(60), check=False)
    assert done.returncode == 0, done.stderr


def test_a_hand_edit_is_reported(tmp_path: Path) -> None:
    files = build.render()
    board = build.DASHBOARD_DIR / "llm-overview.json"
    edited = {path: text for path, text in files.items() if path == board}
    edited[board] = edited[board].replace('"title": "LLM overview"', '"title": "Edited"')
    assert build.stale(edited) == [board]


def test_dashboards_are_written_with_sorted_keys() -> None:
    for path in DASHBOARD_FILES:
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                                  ensure_ascii=False) + "\n", path.name


def test_textfiles_declare_the_expectation() -> None:
    cpu, gpu = (build.TEXTFILE_DIRS[flag] / build.TEXTFILE_NAME for flag in (False, True))
    assert cpu.read_text().rstrip().endswith("llm_stack_gpu_expected 0")
    assert gpu.read_text().rstrip().endswith("llm_stack_gpu_expected 1")
