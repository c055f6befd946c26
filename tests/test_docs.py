"""The README is the front door and the docs site is strict: the README fits on a screen (at
most 12 KB) and its links resolve; `mkdocs build --strict` (run by `make test`) fails on a broken
link, which a copy of the docs with one planted shows."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024


def test_the_readme_fits_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= README_LIMIT
    for target in re.findall(r"\]\(([^)#]+)[^)]*\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_a_broken_link_fails_the_strict_docs_build(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "qsample").symlink_to(ROOT / "qsample")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as page:
        page.write("\n[a page that is not there](nowhere.md)\n")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(tmp_path / "site")], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                        "PATH": "/usr/bin:/bin"})
    assert build.returncode != 0 and "nowhere.md" in build.stderr, build.stderr[-2000:]
