"""Which project code shapes a DVC stage's outputs: the deps that ``dvc.yaml`` must list.

A stage's command runs one module (``python -m pipelines.face_sr.train train_g``); the
project code that can change what it writes is that module and everything it imports,
transitively. :func:`stage_closure` derives that set of files statically from the
import statements (``ast``; imports inside functions count, since they run when called;
those under ``if TYPE_CHECKING:`` do not). :func:`code_deps` then writes it as the
shortest list of paths: a folder where the stage imports every Python file in it,
single files otherwise. ``dvc.yaml`` keeps exactly that list for each stage, so DVC
reruns a stage when, and only when, code it runs changed:

* ``tests/test_dvc_deps.py`` fails when a stage's deps miss a module it imports or
  cover one it does not import;
* ``python -m components.orchestration.code_deps`` prints the list for every stage
  (``--write`` puts it into ``dvc.yaml``, keeping the data and model deps as they are).

Shared infrastructure that cannot change an output is left out (:data:`EXEMPT`), with
the reason beside each entry. ``__init__.py`` files holding only a docstring, imports
and ``__all__`` never change an output either and are not required.
"""

from __future__ import annotations

import ast
import shlex
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

CODE_ROOTS = ("components", "pipelines")

EXEMPT: dict[str, str] = {
    "components/__init__.py": "the package version string",
    "components/errors.py": "exception classes: an error stops a stage, it cannot change what it writes",
    "components/tracking": "MLflow runs and tags: a record of the run, never read back by a stage",
    "components/torch_compat.py": "makes CUDA-built torchvision/torchaudio importable; computes nothing",
    "components/config": "validates params.yaml, which DVC tracks key by key (the classes hold no values); "
                         "a new paper's section must not rerun the other paper's stages",
    "pipelines/_common.py": "argument parsing, logging and the exit code of stage entry points",
}


def _module_file(root: Path, name: str) -> Path | None:
    """The file of project module ``name`` (a package's ``__init__.py``), if it is one."""
    parts = name.split(".")
    if parts[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts[:-1])


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of ``if TYPE_CHECKING:`` bodies (imports there never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _direct_imports(root: Path, path: Path) -> frozenset[Path]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                names += _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(root, path).split(".")
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += _with_parents(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # a submodule, when it is one
    files = {_module_file(root, n) for n in names}
    return frozenset(f for f in files if f is not None and f != path)


def module_closure(root: Path, module: str) -> set[Path]:
    """Files of ``module`` and of every project module it imports, transitively."""
    start = _module_file(root, module)
    if start is None:
        raise ValueError(f"{module}: not a module of this project (under {', '.join(CODE_ROOTS)})")
    seen: set[Path] = set()
    todo = [p for p in (_module_file(root, n) for n in _with_parents(module)) if p is not None]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_direct_imports(root, path) - seen)
    return seen


def command_module(cmd: str) -> str | None:
    """The module a stage command runs (``python -m MODULE ...``), or None for another command."""
    argv = shlex.split(cmd)
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and Path(argv[0]).name.startswith("python"):
            return argv[i + 1]
    return None


def is_trivial(path: Path) -> bool:
    """An ``__init__.py`` of only a docstring, imports and ``__all__``: it computes nothing."""
    if path.name != "__init__.py":
        return False
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            continue
        return False
    return True


def exempt(rel: str) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in EXEMPT)


def stage_closure(root: Path, cmd: str) -> set[str]:
    """Project files (relative paths) that a stage's command runs and that can shape its
    outputs: the import closure minus :data:`EXEMPT` and trivial ``__init__.py`` files."""
    module = command_module(cmd)
    if module is None:
        return set()
    files = module_closure(root, module)
    rels = {p.relative_to(root).as_posix() for p in files if not is_trivial(p)}
    return {r for r in rels if not exempt(r)}


def _code_files(root: Path, rel: str) -> set[str]:
    """Python files under a dep path (a file or a folder), relative, exemptions and trivial
    ``__init__.py`` files left out."""
    path = root / rel
    files = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
    out = {p.relative_to(root).as_posix() for p in files if p.suffix == ".py" and not is_trivial(p)}
    return {r for r in out if not exempt(r)}


def is_code_dep(rel: str) -> bool:
    return rel.split("/", 1)[0] in CODE_ROOTS


def code_deps(root: Path, closure: set[str]) -> list[str]:
    """The shortest dep list covering exactly ``closure``: a folder wherever every Python
    file in it (recursively) is in the closure, the files themselves elsewhere."""
    chosen: set[str] = set()
    for rel in sorted(closure):
        path = Path(rel)
        best = rel
        for parent in path.parents:
            if str(parent) in (".", ""):
                break
            if _code_files(root, parent.as_posix()) <= closure:
                best = parent.as_posix()
        chosen.add(best)
    return sorted(d for d in chosen if not any(d != o and d.startswith(o + "/") for o in chosen))


def check_stage(root: Path, name: str, stage: Mapping[str, object]) -> list[str]:
    """Problems of one stage's code deps: modules it runs that no dep covers, and code
    under its deps that it never runs (a change there would rerun it for nothing)."""
    cmd = str(stage.get("cmd", ""))
    closure = stage_closure(root, cmd)
    deps = [d for d in _dep_paths(stage.get("deps")) if is_code_dep(d)]
    covered = set().union(*(_code_files(root, d) for d in deps)) if deps else set()
    problems = [f"{name}: runs {f} but no dep covers it" for f in sorted(closure - covered)]
    problems += [f"{name}: dep covers {f}, which `{cmd}` never imports" for f in sorted(covered - closure)]
    problems += [f"{name}: dep {d} does not exist" for d in deps if not (root / d).exists()]
    return problems


def _dep_paths(entries: object) -> list[str]:
    return [str(next(iter(e))) if isinstance(e, dict) else str(e) for e in entries or []]  # type: ignore[union-attr]


def derived_deps(root: Path, stages: Mapping[str, Mapping[str, object]]) -> dict[str, list[str]]:
    """For every stage: its derived code deps followed by its other (data, model) deps."""
    out = {}
    for name, stage in stages.items():
        others = [d for d in _dep_paths(stage.get("deps")) if not is_code_dep(d)]
        out[name] = code_deps(root, stage_closure(root, str(stage.get("cmd", "")))) + others
    return out


def write_deps(dvc_yaml: Path, deps: Mapping[str, Iterable[str]]) -> None:
    """Replace each stage's ``deps:`` block in ``dvc.yaml`` in place (comments and the
    order of everything else kept: the file is edited as text, not re-dumped)."""
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    out: list[str] = []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 2 and stripped.endswith(":") and not stripped.startswith("#"):
            stage = stripped[:-1]
        if stage in deps and indent == 4 and stripped == "deps:":
            out.append(line)
            out += [f"      - {d}\n" for d in deps[stage]]
            i += 1
            while i < len(lines) and lines[i].startswith("      - "):
                i += 1
            continue
        out.append(line)
        i += 1
    dvc_yaml.write_text("".join(out))


def main(argv: list[str] | None = None) -> int:
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m components.orchestration.code_deps", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the derived deps into dvc.yaml")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    root = args.root.resolve()
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    deps = derived_deps(root, stages)
    if args.write:
        write_deps(root / "dvc.yaml", deps)
    for name, paths in deps.items():
        print(f"{name}:\n" + "".join(f"  - {p}\n" for p in paths), end="")
    problems = [p for name, st in stages.items() for p in check_stage(root, name, st)] if not args.write else []
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
