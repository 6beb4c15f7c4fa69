"""The release rules that live outside the code: one version, the supported versions
stated alike everywhere, the changelog's form, and the wheel check itself."""

import configparser
import importlib.machinery
import importlib.util
import itertools
import os
import re
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

import django_clerk_sync

ROOT = Path(__file__).resolve().parent.parent
VERSION = django_clerk_sync.__version__
# Never searched for the version: environments, build output, caches.
SKIP_DIRS = {".git", ".venv", ".tox", "build", "dist", "site", "node_modules"}
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".toml",
    ".ini",
    ".cfg",
    ".txt",
    ".yml",
    ".yaml",
    ".html",
}
SECTION_ORDER = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]


def pyproject():
    tomllib = pytest.importorskip(
        "tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib"
    )
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def text_files():
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [
            d
            for d in subdirs
            if d not in SKIP_DIRS
            and not d.endswith((".egg-info", "_cache"))
            and d != ".hypothesis"
        ]
        for name in files:
            path = Path(directory, name)
            if path.suffix in TEXT_SUFFIXES or name == "Makefile":
                yield path


def tox_envs():
    """tox.ini's env_list with its ``{a,b}`` groups expanded."""
    config = configparser.ConfigParser()
    config.read(ROOT / "tox.ini")
    for line in config["tox"]["env_list"].split():
        groups = [g.split(",") for g in re.findall(r"\{([^}]*)\}", line)]
        template = re.sub(r"\{[^}]*\}", "{}", line)
        for choice in itertools.product(*groups):
            yield template.format(*choice)


def test_the_version_is_pep_440_and_read_from_the_package():
    Version(VERSION)  # raises on anything pip would refuse
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "django_clerk_sync.__version__"
    }


def test_no_other_file_repeats_the_version():
    allowed = {ROOT / "django_clerk_sync" / "__init__.py", ROOT / "CHANGELOG.md"}
    repeats = [
        str(path.relative_to(ROOT))
        for path in text_files()
        if path not in allowed and VERSION in path.read_text(errors="replace")
    ]
    assert not repeats, f"{VERSION} is written out in {repeats}; read __version__"


def test_the_package_is_marked_typed():
    assert (ROOT / "django_clerk_sync" / "py.typed").is_file()
    package_data = pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["django_clerk_sync"]


def test_classifiers_and_requirements_match_the_tox_matrix():
    envs = list(tox_envs())
    pythons = {
        f"3.{m.group(1)}" for env in envs if (m := re.match(r"py3(\d+)-django", env))
    }
    djangos = {
        f"{m.group(1)}.{m.group(2)}"
        for env in envs
        if (m := re.search(r"-django(\d)(\d)\b", env))
    }
    assert pythons and djangos

    project = pyproject()["project"]
    classifiers = project["classifiers"]
    assert {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    } == pythons
    assert {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Framework :: Django :: \d\.\d", c)
    } == djangos

    oldest_python = min(pythons, key=Version)
    oldest_django = min(djangos, key=Version)
    assert project["requires-python"] == f">={oldest_python}"
    assert f"Django>={oldest_django}" in project["dependencies"]
    # The oldest and the newest combination also run on PostgreSQL.
    assert (
        f"py{oldest_python.replace('.', '')}-django{oldest_django.replace('.', '')}-postgres"
        in envs
    )
    newest_python = max(pythons, key=Version).replace(".", "")
    newest_django = max(djangos, key=Version).replace(".", "")
    assert f"py{newest_python}-django{newest_django}-postgres" in envs
    # And the checks CI runs are environments of their own.
    assert {"lint", "types", "migrations", "docs", "noextras", "wheel"} <= set(envs)


def test_the_changelog_keeps_a_changelog_form():
    text = (ROOT / "CHANGELOG.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# Changelog"

    references = dict(re.findall(r"^\[([^\]]+)\]: (\S+)$", text, re.MULTILINE))
    releases = re.findall(r"^## (.*)$", text, re.MULTILINE)
    assert releases and releases[0] == "[Unreleased]", (
        "the first section is [Unreleased]"
    )
    versions = []
    for heading in releases[1:]:
        match = re.fullmatch(r"\[([^\]]+)\] - (\d{4}-\d{2}-\d{2})", heading)
        assert match, f"a release heading is '## [x.y.z] - YYYY-MM-DD', not {heading!r}"
        versions.append(Version(match.group(1)))
    assert versions == sorted(versions, reverse=True), "newest release first"
    for heading in releases:
        name = heading[1:].split("]")[0]
        assert name in references, f"CHANGELOG.md needs a link reference [{name}]: ..."

    # Each release's subsections are Keep a Changelog's, once each, in its order.
    for block in re.split(r"^## .*$", text, flags=re.MULTILINE)[1:]:
        sections = re.findall(r"^### (.*)$", block, re.MULTILINE)
        assert all(s in SECTION_ORDER for s in sections), sections
        assert sections == sorted(set(sections), key=SECTION_ORDER.index), sections

    # The link references close the file, after the last entry.
    last_entry = max(i for i, line in enumerate(lines) if line.startswith(("- ", "  ")))
    first_reference = min(
        i for i, line in enumerate(lines) if re.match(r"^\[[^\]]+\]: ", line)
    )
    assert first_reference > last_entry


# .ci/check-wheel's own checks, on wheels made here: the good one passes, and each
# kind of broken one is refused.


@pytest.fixture(scope="module")
def check_wheel():
    path = ROOT / ".ci" / "check-wheel"
    loader = importlib.machinery.SourceFileLoader("check_wheel", str(path))
    spec = importlib.util.spec_from_loader("check_wheel", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def make_wheel(directory, files, version=VERSION):
    wheel = directory / f"django_clerk_sync-{version}-py3-none-any.whl"
    dist_info = f"django_clerk_sync-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            f"{dist_info}/METADATA", f"Name: django-clerk-sync\nVersion: {version}\n"
        )
        archive.writestr(f"{dist_info}/licenses/LICENSE", "MIT")
        for name in files:
            archive.writestr(name, "")
    return wheel


def test_check_wheel_passes_a_complete_wheel(check_wheel, tmp_path):
    files = check_wheel.package_files()
    assert "django_clerk_sync/py.typed" in files
    assert "django_clerk_sync/migrations/0001_initial.py" in files
    check_wheel.check_wheel_contents(make_wheel(tmp_path, files), VERSION)


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda files: files | {"tests/test_smoke.py"}, "outside the package"),
        (lambda files: files | {"example_project/demo.py"}, "outside the package"),
        (
            lambda files: (
                files | {"django_clerk_sync/__pycache__/sync.cpython-311.pyc"}
            ),
            "caches",
        ),
        (
            lambda files: files - {"django_clerk_sync/py.typed"},
            "django_clerk_sync/py.typed",
        ),
        (
            lambda files: files - {"django_clerk_sync/migrations/0001_initial.py"},
            "0001_initial.py",
        ),
    ],
    ids=["tests", "example_project", "pycache", "no py.typed", "no migration"],
)
def test_check_wheel_refuses_a_broken_wheel(check_wheel, tmp_path, change, reason):
    wheel = make_wheel(tmp_path, change(check_wheel.package_files()))
    with pytest.raises(check_wheel.CheckFailed, match=re.escape(reason)):
        check_wheel.check_wheel_contents(wheel, VERSION)


def test_check_wheel_refuses_another_version(check_wheel, tmp_path):
    wheel = make_wheel(tmp_path, check_wheel.package_files(), version="0.0.1")
    with pytest.raises(check_wheel.CheckFailed, match="is not __version__"):
        check_wheel.check_wheel_contents(wheel, VERSION)
