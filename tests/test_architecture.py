"""The architecture holds: dependencies point one way, and every reference points inside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fitmm"

# what each part may import from fitmm (besides itself); lower layers first
ALLOWED = {
    "errors": set(), "files": {"errors"}, "settings": {"errors"},
    "data": {"errors", "files", "features"}, "features": {"errors", "files"},
    "graph": {"errors"}, "evaluation": set(),
    "retrieval": {"data", "errors", "graph"},
    "models": {"data", "errors", "graph", "settings"},
    "training": {"data", "errors", "evaluation", "files", "models", "retrieval", "settings"},
    "serving": {"data", "errors", "evaluation", "files", "retrieval", "training"},
    "experiments": {"data", "errors", "evaluation", "files", "training"},
    "interfaces": {"data", "errors", "evaluation", "experiments", "files", "models", "retrieval", "serving",
                   "training", "features"},
}
# served from an export, these never load model or training code (serving.export names TrainedRun for typing only)
MODEL_FREE = ("serving/app.py", "serving/index.py")


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path, typing_only: bool = False) -> set[str]:
    """The fitmm parts a module imports (anywhere in it, functions included), without those imported
    only for type checking."""
    tree = ast.parse(path.read_text())
    checking = {id(node) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                and "TYPE_CHECKING" in ast.unparse(guard.test) for node in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking and not typing_only:
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found |= {name.split(".")[1] for name in names if name.startswith("fitmm.") and name.count(".") >= 1}
    return found


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py" and path.parent != PACKAGE
                 or path.name in ("errors.py", "files.py", "settings.py", "retrieval.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_dependencies_point_one_way(path):
    part = _part(path)
    upward = _imports(path) - ALLOWED[part] - {part}
    assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)}"


def test_training_and_experiments_never_import_interfaces():
    for part in ("training", "experiments"):
        for path in (PACKAGE / part).glob("*.py"):
            assert "interfaces" not in _imports(path), path


@pytest.mark.parametrize("name", MODEL_FREE)
def test_the_export_server_loads_no_model_code(name):
    assert not _imports(PACKAGE / name) & {"models", "training"}


DOC_REFERENCE = re.compile(r"((?:\.\./)*(?:docs/[\w-]+|README)\.md)`{0,2}(?: §(\d+(?:\.\d+)?))?")
TEXT_FILES = [path for pattern in ("*.md", "*.py", "*.yaml", "*.toml", "*.sh") for path in ROOT.rglob(pattern)
              if not {".venv", ".ci-venv", "runs", "datasets", ".git", "build", "dist"} & set(path.relative_to(ROOT).parts)
              and "egg-info" not in str(path)]


def _sections(document: Path) -> set[str]:
    """The numbers of a Markdown document's numbered headings (``## 3. …`` → "3", ``### 1.6 …`` → "1.6")."""
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", document.read_text(encoding="utf-8"), flags=re.M))


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_documentation_reference_points_inside_the_repository(path):
    """A reference to the docs (``docs/method.md §6``) names a file of the repository and, with a
    section, one of its numbered headings; nothing refers to specification files outside it."""
    text = path.read_text(encoding="utf-8")
    outside = "shared" + "/spec"  # written in two pieces so that this file does not name it
    assert outside not in text and not re.search(r"\b(FITMM|BASELINES|PROTOCOL)\.md", text), path
    for match in DOC_REFERENCE.finditer(text):
        target, section = match.groups()
        document = next((candidate.resolve() for candidate in (path.parent / target, ROOT / target)
                         if candidate.resolve().is_file()), None)
        assert document is not None, f"{path}: dangling {target}"
        assert section is None or section in _sections(document), f"{path}: {target} has no section {section}"
