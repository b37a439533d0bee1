"""The documentation runs: every ```python block of README.md and docs/**/*.md, and the strict site build.

One test per Markdown file: its blocks run top to bottom in one namespace (Sybil), in a temporary
working directory, so files an example writes never land in the repository. A block that cannot run
here is marked on the line before it with `<!-- skip: next "reason" -->`; a marker without a reason,
or not directly above a ```python block, fails the test. A failing block fails the test with its file
and line. Run one file's blocks with `pytest tests/test_docs.py -k <file stem>`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path
from unittest import SkipTest

import keras
import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("**/*.md")])
DOC_FILES = [path for path in DOC_FILES if path.is_file()]

_FENCE = re.compile(r"^```python\s*$", re.MULTILINE)
_SKIP_ANY = re.compile(r"<!--\s*skip:")
_SKIP_NEXT = re.compile(r'^<!-- skip: next "[^"]+" -->$')

_SYBIL = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])


def _doc_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def check_skip_markers(text: str, name: str) -> list[str]:
    """Every skip marker is `<!-- skip: next "reason" -->` on the line right above a ```python fence."""
    problems = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not _SKIP_ANY.search(line):
            continue
        if not _SKIP_NEXT.match(line.strip()):
            problems.append(f"{name}:{number}: skip marker must read exactly <!-- skip: next \"reason\" -->")
        elif number >= len(lines) or not _FENCE.match(lines[number]):
            problems.append(f"{name}:{number}: skip marker is not on the line right before a ```python block")
    return problems


def test_skip_marker_rules_are_enforced():
    good = '<!-- skip: next "needs a GPU" -->\n```python\nx = 1\n```\n'
    assert check_skip_markers(good, "f.md") == []
    assert check_skip_markers("<!-- skip: next -->\n```python\nx\n```\n", "f.md") == [
        'f.md:1: skip marker must read exactly <!-- skip: next "reason" -->']
    assert check_skip_markers('<!-- skip: next "r" -->\n\n```python\nx\n```\n', "f.md") == [
        "f.md:1: skip marker is not on the line right before a ```python block"]


def test_a_failing_block_names_file_and_line(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nvalue = 1\n```\n\ntext\n\n```python\nassert value == 2\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)page\.md:9: python block failed.*line 10.*assert value == 2.*AssertionError"):
        _run_document(page, "page.md", tmp_path, monkeypatch)


def test_blocks_share_a_namespace_and_skip_markers_skip(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text('```python\nvalue = 1\n```\n\n<!-- skip: next "not here" -->\n```python\nraise RuntimeError\n```\n'
                    '\n```python\nassert value == 1\nopen("written.txt", "w").close()\n```\n')
    (tmp_path / "work").mkdir()
    ran, skipped = _run_document(page, "page.md", tmp_path / "work", monkeypatch)
    assert (ran, skipped) == (2, ["page.md:6: not here"])
    assert (tmp_path / "work" / "written.txt").is_file()


def _traceback_from(error: BaseException, path: Path) -> str:
    """The traceback from the document's own frame on (Sybil's and pytest's frames left out)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(path):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def _run_document(path: Path, name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """Runs the examples of `path` in order in `workdir`; returns (blocks run, skip reasons)."""
    text = path.read_text(encoding="utf-8")
    problems = check_skip_markers(text, name)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    document = _SYBIL.parse(path)
    examples = list(document)
    fenced = [e for e in examples if text.startswith("```", e.start) and e.parsed is not None
              and not isinstance(e.parsed, tuple)]
    if len(fenced) != len(_FENCE.findall(text)):
        pytest.fail(f"{name}: {len(_FENCE.findall(text))} ```python fences but {len(fenced)} blocks parsed "
                    "(a fence inside a list or quote is not collected; move it to the left margin)", pytrace=False)
    monkeypatch.chdir(workdir)
    document.namespace["__name__"] = "__doc_example__"
    ran, skipped = 0, []
    for example in examples:
        try:
            example.evaluate()
        except SkipTest as skip:
            skipped.append(f"{name}:{example.line}: {skip}")
            continue
        except Exception as error:  # noqa: BLE001 - report which block of which file failed
            pytest.fail(f"{name}:{example.line}: python block failed\n{_traceback_from(error, path)}", pytrace=False)
        if not isinstance(example.parsed, tuple):
            ran += 1
    return ran, skipped


@pytest.mark.parametrize("path", DOC_FILES, ids=[_doc_id(p) for p in DOC_FILES])
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    has_python = bool(_FENCE.search(path.read_text(encoding="utf-8")))
    if has_python:
        keras.backend.clear_session()  # fresh layer names and graph state for this page
    try:
        ran, skipped = _run_document(path, _doc_id(path), tmp_path, monkeypatch)
    finally:
        if has_python:
            keras.backend.clear_session()
    for reason in skipped:
        print(f"skipped {reason}")


REFERENCED_MODULES = ("tfprune", "tfprune.structured", "tfprune.quantization", "tfprune.oneshot", "tfprune.functional")


def _heading_ids(site: Path) -> list[str]:
    ids = []
    for page in sorted((site / "reference").glob("**/*.html")):
        ids += re.findall(r'<h\d id="([^"]+)" class="doc doc-heading"', page.read_text(encoding="utf-8"))
    return ids


def unlisted_public_names(ids: list[str]) -> list[str]:
    """'module.name (listed k times)' for each name of the modules' `__all__` not documented exactly once.

    A name counts as documented under `module.name` or under its defining path (a function that
    shares its name with its submodule is documented as `submodule.function`).
    """
    problems = []
    for module_name in REFERENCED_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            accepted = {f"{module_name}.{name}"}
            if inspect.isfunction(obj) or inspect.isclass(obj):
                accepted.add(f"{obj.__module__}.{obj.__qualname__}")
            count = sum(ids.count(anchor) for anchor in accepted)
            if count != 1:
                problems.append(f"{module_name}.{name} (listed {count} times)")
    return problems


def test_site_builds_strict_and_lists_every_public_name_once(tmp_path: Path) -> None:
    """`mkdocs build --strict` passes (a broken link, a missing API page or a bad docstring fails the
    suite), and the API reference documents every name of the public modules' `__all__` once."""
    if not (ROOT / "mkdocs.yml").is_file():
        pytest.fail("mkdocs.yml is missing", pytrace=False)
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        warnings = [line for line in output if line.startswith(("WARNING", "ERROR"))] or output[-40:]
        pytest.fail("mkdocs build --strict failed:\n" + "\n".join(warnings), pytrace=False)
    assert (site / "index.html").is_file()
    problems = unlisted_public_names(_heading_ids(site))
    assert not problems, "API reference must document each public name once:\n" + "\n".join(problems)
    for page in sorted((site / "reference").glob("**/*.html")):
        # `>>>` lines outside an example section render as nested block quotes
        assert "<blockquote>" not in page.read_text(encoding="utf-8"), f"{page}: a docstring renders a block quote"
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "--checkpoint_dir" in cli_page and "<!-- cli-help" not in cli_page


def test_unlisted_public_names_reports_missing_and_repeated():
    ids = _all_reference_ids_for_test()
    assert unlisted_public_names(ids) == []
    dropped = [i for i in ids if i != "tfprune.prune_low_magnitude"]
    assert unlisted_public_names(dropped) == ["tfprune.prune_low_magnitude (listed 0 times)"]
    assert unlisted_public_names(ids + ["tfprune.oneshot.prune"]) == ["tfprune.oneshot.prune (listed 2 times)"]


def _all_reference_ids_for_test() -> list[str]:
    ids = []
    for module_name in REFERENCED_MODULES:
        ids += [f"{module_name}.{name}" for name in importlib.import_module(module_name).__all__]
    return ids


def _griffe_package():
    import griffe

    extension = griffe.load_extensions(f"{ROOT / 'tools' / 'docs_griffe.py'}:ExampleSections")
    return griffe.load("tfprune", search_paths=[str(ROOT)], extensions=extension, resolve_aliases=False)


def test_public_docstrings_have_an_example():
    """Each name of the public modules' `__all__` has a docstring with an example (`>>>` lines)."""
    import griffe

    package = _griffe_package()
    missing = []
    for module_name in REFERENCED_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                path = obj.__name__
            elif inspect.isfunction(obj) or inspect.isclass(obj):
                path = f"{obj.__module__}.{obj.__qualname__}"
            else:
                path = f"{module_name}.{name}"
            documented = package if path == "tfprune" else package[path.removeprefix("tfprune.")]
            sections = documented.docstring.parse("google") if documented.docstring else []
            if not any(section.kind is griffe.DocstringSectionKind.examples for section in sections):
                missing.append(f"{module_name}.{name} ({path})")
    assert not missing, "public names without an Example section in their docstring:\n" + "\n".join(missing)


def _tool_block_names() -> dict[str, str]:
    """{block name: tool file} for every benchmark tool that writes a marked block."""
    names = {}
    for tool in sorted((ROOT / "tools").glob("bench_*.py")):
        source = tool.read_text(encoding="utf-8")
        found = re.findall(r'replace_block\(\s*[\w.]+,\s*"(\w+)"', source)
        found += re.findall(r'README_BLOCK\s*=\s*"(\w+)"', source)
        names.update({name: tool.name for name in found})
    return names


def test_benchmark_tables_live_in_docs_benchmarks():
    """Each tool's block appears once in docs/benchmarks.md (where `--readme docs/benchmarks.md` writes
    it) and not in the README, which keeps only headline figures."""
    names = _tool_block_names()
    assert len(names) >= 7, names
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, tool in names.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        assert page.count(begin) == 1 and page.count(end) == 1, f"docs/benchmarks.md needs one {name} block ({tool})"
        assert page.index(begin) < page.index(end)
        assert begin not in readme, f"README.md still has the {name} block; the tables live in docs/benchmarks.md"
        assert "--readme docs/benchmarks.md" in page[:page.index(begin)].rsplit("\n## ", 1)[-1], \
            f"docs/benchmarks.md: the {name} section must show the command that regenerates it"
