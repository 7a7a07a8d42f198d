"""The project's own docs: they build strictly, the README stays a short page, nothing points outside the repo."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12_000
# Spelled in two pieces so this file does not match its own search.
OUTSIDE_REFERENCE = "../" + "shared"


def build_docs(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=project, capture_output=True, text=True, timeout=60)


def nav_pages() -> list[str]:
    def walk(entries):
        for entry in entries:
            for value in entry.values():
                yield from (walk(value) if isinstance(value, list) else [value])
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)
    return list(walk(config["nav"]))


def copy_of_the_docs(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    return project


def test_the_docs_build_in_strict_mode_with_every_page_of_the_nav(tmp_path):
    built = build_docs(ROOT, tmp_path / "site")

    assert built.returncode == 0, built.stdout + built.stderr
    for page in nav_pages():
        html = tmp_path / "site" / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert html.is_file(), f"{page} is in the nav but was not built"


@pytest.mark.parametrize("page, added, complaint", [
    ("orphan.md", "# Orphan\n", "orphan.md"),
    ("index.md", "\n[gone](no-such-page.md)\n", "no-such-page.md"),
    ("index.md", "\n[gone](architecture.md#no-such-section)\n", "no-such-section"),
], ids=["a page missing from the nav", "a broken link", "a broken anchor"])
def test_the_strict_build_fails_on(tmp_path, page, added, complaint):
    project = copy_of_the_docs(tmp_path)
    with (project / "docs" / page).open("a") as damaged:
        damaged.write(added)

    built = build_docs(project, tmp_path / "site")

    assert built.returncode != 0
    assert complaint in built.stdout + built.stderr


def test_the_readme_is_a_short_page_whose_links_all_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [target for target in targets if "://" not in target]

    assert len(readme) < README_LIMIT, f"README.md has {len(readme)} characters; move detail to docs/"
    assert any(target.startswith("docs/") for target in local), "README.md should link into docs/"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_no_file_of_the_project_refers_to_a_path_outside_the_repository():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    files = [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    assert files, "git listed no file of the project"

    offenders = [str(path.relative_to(ROOT)) for path in files
                 if OUTSIDE_REFERENCE.encode() in path.read_bytes()]

    assert not offenders, f"these files refer to {OUTSIDE_REFERENCE}, which a clone does not have: {offenders}"
