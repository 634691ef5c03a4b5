"""The package's inner boundaries, checked on its source.

aiodicomnet keeps everything that touches pynetdicom's internals or crosses
threads in one room, ``aiodicomnet/_dimse/``, so that a pynetdicom upgrade is
audited there and nowhere else (``gui/`` also crosses threads: it bridges the
event loop to GUI toolkits). These tests hold the line:

- outside the room, no module names pynetdicom's DUL or DIMSE providers
  (``dul.``, ``dimse.``, ``to_user_queue``, ``_is_connected``), its private
  names (``from pynetdicom._config import ...``, ``assoc._reactor_checkpoint``),
  or crosses threads (``threading.Thread``, ``from_thread``, ``to_thread``,
  executors): each of those is what ``_dimse.bridge`` is for;
- the package's module-level imports form no cycle (a cycle makes the import
  order matter, and says two layers are really one);
- pynetdicom itself is imported only in the room, and by the few modules of
  :data:`PYNETDICOM_ALLOWED`, each with its reason.

The checks read the syntax tree (names, attributes, imports), so comments and
docstrings that mention these names do not count. Each checker is first run
on small snippets that violate and that do not, so none can pass vacuously.
"""

from __future__ import annotations

import ast
import functools
import socketserver
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pynetdicom
import pytest

import aiodicomnet

PACKAGE_DIR = Path(aiodicomnet.__file__).resolve().parent
PACKAGE = "aiodicomnet"
ROOT = PACKAGE_DIR.parent

#: Sub-packages allowed to reach into pynetdicom and to cross threads.
ROOM = "_dimse"
EXEMPT = (ROOM, "gui")

#: Modules outside the room that may import (public) pynetdicom today, and why.
#: The goal is an empty list; ``test_allow_list_is_still_needed`` fails when an
#: entry stops importing pynetdicom, so the list only shrinks.
PYNETDICOM_ALLOWED: Mapping[str, str] = {
    "aiodicomnet/status.py": (
        "PS3.7 status tables (code -> category, meaning) for every service: pynetdicom "
        "publishes them as constants; a copy would be a second table to keep in step"
    ),
    "aiodicomnet/query.py": (
        "the Query/Retrieve information model SOP Class UIDs (pynetdicom.sop_class "
        "constants; pydicom.uid has none of them)"
    ),
    "aiodicomnet/server.py": (
        "the Storage SCP runs pynetdicom's AE and ThreadedAssociationServer; to go when the "
        "acceptor side moves into _dimse"
    ),
    "aiodicomnet/archive.py": (
        "the Q/R SCP binds pynetdicom event handlers and presentation contexts; to go "
        "with server.py's entry"
    ),
}

#: pynetdicom's DUL and DIMSE providers: forbidden as ``dul.x``/``dimse.x`` and as
#: module parts (``Timeouts.dimse``, a number, is the package's own and fine).
PROVIDERS: Mapping[str, str] = {
    "dul": "pynetdicom's DUL provider (its reader thread and queues)",
    "dimse": "pynetdicom's DIMSE provider (its message queue)",
}

#: Names that reach into those providers, or a crossing between
#: threads. Matched as attribute names, imported names and dotted module parts.
FORBIDDEN: Mapping[str, str] = {
    "to_user_queue": "pynetdicom's DUL-to-user queue",
    "_is_connected": "pynetdicom's socket state",
    "from_thread": "a call from a foreign thread into the event loop",
    "to_thread": "a worker thread not owned and joined by the library",
    "run_in_executor": "a worker thread not owned and joined by the library",
    "ThreadPoolExecutor": "a worker thread not owned and joined by the library",
}

#: Modules that start threads, forbidden as imports.
FORBIDDEN_MODULES: Mapping[str, str] = {"_thread": "a thread started outside the bridge"}

#: ``threading`` attributes that start threads.
THREAD_STARTERS = frozenset({"Thread", "Timer"})

#: pynetdicom private names named by the issue: flagged on any object but ``self``/``cls``,
#: even if the package also happens to define the name.
ALWAYS_PRIVATE = frozenset({"_is_connected", "_ready", "_reactor_checkpoint"})

_ATTRIBUTE_CALLS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True, order=True)
class Violation:
    """One forbidden name at one place in the source."""

    path: str
    line: int
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.why})"


def _private(name: str) -> bool:
    return len(name) > 1 and name.startswith("_") and not name.startswith("__")


# -- what pynetdicom and the package call private ----------------------------------


def private_names_defined(trees: Iterable[ast.AST], *, self_only: bool) -> set[str]:
    """Private names that ``trees`` define: functions, classes, stored attributes.

    With ``self_only``, a stored attribute counts only on ``self``/``cls`` (what a
    class defines for itself); otherwise on any object, and module-level names count.
    """
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if not self_only or _receiver(node) in {"self", "cls"}:
                    names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and not self_only:
                names.add(node.id)
        if self_only:
            names.update(_class_body_names(tree))
    return {name for name in names if _private(name)}


def _class_body_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            targets: list[ast.expr] = []
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@functools.cache
def pynetdicom_private_names() -> frozenset[str]:
    """Every private name the installed pynetdicom defines (its tests and apps aside).

    Read from pynetdicom's own source, so the check follows an upgrade; with
    the standard library's ``socketserver``, whose ``TCPServer`` pynetdicom's
    association server is (``_handle_request_noblock`` is reached through it).
    """
    root = Path(pynetdicom.__file__).resolve().parent
    trees = [ast.parse(Path(socketserver.__file__).read_text(encoding="utf-8"))]
    modules = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).parts
        if relative[0] in {"tests", "apps", "benchmarks"}:
            continue
        modules.add(path.stem)
        trees.append(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return frozenset(
        private_names_defined(trees, self_only=False) | {m for m in modules if _private(m)}
    )


def _receiver(node: ast.Attribute) -> str | None:
    """``x`` for ``x.attr``, ``super()`` for ``super().attr``, else None."""
    value = node.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return f"{value.func.id}()"
    return None


# -- rule 1: no pynetdicom internals, no thread crossing -----------------------------


class BoundaryChecker(ast.NodeVisitor):
    """Collects the forbidden names of one module (see the module docstring).

    ``pynetdicom_private``: private names pynetdicom defines; ``own``: private
    names the checked code defines itself on its own classes (an access such as
    ``self._lock`` is then the package's, not pynetdicom's).
    """

    def __init__(self, path: str, pynetdicom_private: frozenset[str], own: set[str]) -> None:
        self.path = path
        self.private = pynetdicom_private
        self.own = own
        self.threading_names: set[str] = set()
        self.found: list[Violation] = []

    def flag(self, node: ast.AST, name: str, why: str) -> None:
        self.found.append(Violation(self.path, getattr(node, "lineno", 0), name, why))

    # imports

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
            if alias.name == "threading":
                self.threading_names.add(alias.asname or "threading")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0:
            self._check_module(node, module)
        for alias in node.names:
            name = alias.name
            if name in FORBIDDEN:
                self.flag(node, name, FORBIDDEN[name])
            elif node.level == 0 and module == "threading" and name in THREAD_STARTERS:
                self.flag(node, f"threading.{name}", "a thread started outside the bridge")
            elif node.level == 0 and module.split(".")[0] == "pynetdicom" and _private(name):
                self.flag(node, f"{module}.{name}", "a private pynetdicom name")

    def _check_module(self, node: ast.AST, module: str) -> None:
        parts = module.split(".")
        if parts[0] in FORBIDDEN_MODULES:
            self.flag(node, module, FORBIDDEN_MODULES[parts[0]])
            return
        for part in parts:
            why = FORBIDDEN.get(part) or PROVIDERS.get(part)
            if why:
                self.flag(node, module, why)
                return
        if parts[0] == "pynetdicom" and any(_private(p) for p in parts[1:]):
            self.flag(node, module, "a private pynetdicom module")

    # attributes

    def visit_Attribute(self, node: ast.Attribute) -> None:
        receiver = _receiver(node)
        value = node.value
        provider = value.id if isinstance(value, ast.Name) else getattr(value, "attr", None)
        if provider in PROVIDERS:
            self.flag(node, f"{provider}.{node.attr}", PROVIDERS[provider])
        if receiver in self.threading_names and node.attr in THREAD_STARTERS:
            self.flag(node, f"threading.{node.attr}", "a thread started outside the bridge")
        self._check_attribute(node, node.attr, receiver)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(cx, "_transfer_syntax", ...) is an attribute access by another name.
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_CALLS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            target = node.args[0]
            receiver = target.id if isinstance(target, ast.Name) else None
            self._check_attribute(node, node.args[1].value, receiver)
        self.generic_visit(node)

    def _check_attribute(self, node: ast.AST, attr: str, receiver: str | None) -> None:
        if attr in FORBIDDEN:
            self.flag(node, attr, FORBIDDEN[attr])
        elif not _private(attr) or receiver in {"self", "cls", "super()"}:
            return
        elif attr in ALWAYS_PRIVATE or (attr in self.private and attr not in self.own):
            self.flag(node, attr, "a private pynetdicom name")


def check_sources(sources: Mapping[str, str]) -> list[Violation]:
    """Rule 1 over ``sources`` (path -> source text), all checked together."""
    trees = {path: ast.parse(text, path) for path, text in sources.items()}
    own = private_names_defined(trees.values(), self_only=True)
    found: list[Violation] = []
    for path, tree in trees.items():
        checker = BoundaryChecker(path, pynetdicom_private_names(), own)
        checker.visit(tree)
        found.extend(checker.found)
    return sorted(set(found))


# -- the package's files ---------------------------------------------------------------


def package_files() -> Iterator[Path]:
    yield from sorted(PACKAGE_DIR.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _exempt(path: Path) -> bool:
    return path.relative_to(PACKAGE_DIR).parts[0] in EXEMPT


def outside_the_room() -> dict[str, str]:
    return {relative(p): p.read_text(encoding="utf-8") for p in package_files() if not _exempt(p)}


# -- rule 2: no import cycle -------------------------------------------------------------


def module_name(path: Path, package_dir: Path, package: str) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports run when the module is imported.

    That is the module's body and what it nests in ``if``/``try``/``with``/loops
    and class bodies; not function bodies, not ``if TYPE_CHECKING:`` blocks.
    """
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from module_level_imports(stmt.body)
            yield from module_level_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody):
                yield from module_level_imports(block)
            for handler in stmt.handlers:
                yield from module_level_imports(handler.body)
        elif isinstance(stmt, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from module_level_imports(stmt.body)
            if isinstance(stmt, (ast.For, ast.While)):
                yield from module_level_imports(stmt.orelse)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module named by a (possibly relative) import in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, *([name] if name else [])])


def import_edges(module: str, is_package: bool, tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` imports at module level.

    ``from x import y`` reaches ``x.y`` when it is a module, and ``x`` (the
    package's ``__init__``) unless ``x`` is a package ``module`` sits in: Python
    imports those first anyway, and a submodule can be imported from a package
    still being initialised. A name that is not a module (``from . import
    __version__``) does need ``x`` initialised: that is an edge, ancestor or not.
    """
    ancestors = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
    edges: set[str] = set()
    for stmt in module_level_imports(tree.body):
        if isinstance(stmt, ast.Import):
            edges.update(a.name for a in stmt.names if a.name in modules)
            continue
        target = _resolve(module, is_package, stmt.level, stmt.module)
        for alias in stmt.names:
            sub = f"{target}.{alias.name}"
            if sub in modules:
                edges.add(sub)
                if target in modules and target not in ancestors:
                    edges.add(target)
            elif target in modules:
                edges.add(target)
    edges.discard(module)
    return edges


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    paths = sorted(package_dir.rglob("*.py"))
    names = {module_name(p, package_dir, package): p for p in paths}
    modules = set(names)
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = import_edges(name, path.name == "__init__.py", tree, modules)
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``a -> b -> ... -> a``) per strongly connected part of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.add(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph.get(v, ()):
                parts.append(part)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(part, graph) for part in parts]


def _cycle_through(part: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest cycle from the part's first module back to itself (breadth first)."""
    start = min(part)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & part):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in {part}")  # pragma: no cover - Tarjan found one


# -- rule 3: who imports pynetdicom ------------------------------------------------------


def pynetdicom_imports(path: str, source: str) -> list[Violation]:
    """Every import of pynetdicom in ``source``, wherever it stands (functions too)."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        found.extend(
            Violation(path, node.lineno, m, "imports pynetdicom")
            for m in modules
            if m.split(".")[0] == "pynetdicom"
        )
    return found


def _report(title: str, items: Iterable[object]) -> str:
    return "\n".join([title, *(f"  {item}" for item in items)])


# =========================================================================== the tests


def test_no_pynetdicom_internals_or_thread_crossing_outside_the_room() -> None:
    sources = outside_the_room()
    assert len(sources) > 10, sorted(sources)  # the walk found the package
    found = check_sources(sources)
    assert not found, _report(
        f"pynetdicom internals or thread crossings outside aiodicomnet/{ROOM}/ "
        "(move them into the room, behind a function of the bridge or the association):",
        found,
    )


def test_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert graph.get(f"{PACKAGE}.client"), graph
    cycles = find_cycles(graph)
    assert not cycles, _report(
        "import cycles in the package (module-level imports):",
        (" -> ".join(c) for c in cycles),
    )


def test_pynetdicom_imported_only_in_the_room() -> None:
    found = [
        v
        for path, text in outside_the_room().items()
        if path not in PYNETDICOM_ALLOWED
        for v in pynetdicom_imports(path, text)
    ]
    assert not found, _report(
        f"pynetdicom imported outside aiodicomnet/{ROOM}/ and the allow-list:", found
    )


@pytest.mark.parametrize("path", sorted(PYNETDICOM_ALLOWED))
def test_allow_list_is_still_needed(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert pynetdicom_imports(path, text), (
        f"{path} no longer imports pynetdicom: drop it from PYNETDICOM_ALLOWED"
    )


# -- the checkers themselves, on snippets ------------------------------------------------


def _check(source: str, *others: str) -> list[str]:
    sources = {"m.py": textwrap.dedent(source)}
    sources.update({f"o{i}.py": textwrap.dedent(s) for i, s in enumerate(others)})
    return [v.name for v in check_sources(sources) if v.path == "m.py"]


def test_checker_flags_pynetdicom_internals() -> None:
    assert _check("assoc.dul.to_user_queue.put(None)") == ["dul.to_user_queue", "to_user_queue"]
    assert _check("assoc.dimse.msg_queue.get()") == ["dimse.msg_queue"]
    assert _check("dimse.msg_queue.get()") == ["dimse.msg_queue"]
    assert _check("if sock._is_connected: pass") == ["_is_connected"]
    assert _check("assoc._reactor_checkpoint.set()") == ["_reactor_checkpoint"]
    assert _check("while not assoc._ready.is_set(): pass") == ["_ready"]
    assert _check("syntaxes = getattr(cx, '_transfer_syntax', None)") == ["_transfer_syntax"]
    assert _check("server._handle_request_noblock()") == ["_handle_request_noblock"]
    assert _check("from pynetdicom import _config") == ["pynetdicom._config"]
    assert _check("from pynetdicom._handlers import doc_handle_echo") == ["pynetdicom._handlers"]
    assert _check("import pynetdicom._config") == ["pynetdicom._config"]
    assert _check("from pynetdicom.dul import DULServiceProvider") == ["pynetdicom.dul"]


def test_checker_flags_thread_crossings() -> None:
    assert _check("import threading\nthreading.Thread(target=f).start()") == ["threading.Thread"]
    assert _check("import threading as t\nt.Timer(1, f)") == ["threading.Timer"]
    assert _check("from threading import Thread") == ["threading.Thread"]
    assert _check("import anyio.from_thread") == ["anyio.from_thread"]
    assert _check("from anyio import from_thread") == ["from_thread"]
    assert _check("anyio.from_thread.run(f, token=t)") == ["from_thread"]
    assert _check("await anyio.to_thread.run_sync(f)") == ["to_thread"]
    assert _check("await loop.run_in_executor(None, f)") == ["run_in_executor"]


def test_checker_passes_clean_code() -> None:
    clean = '''
        """Docstrings may say dul.to_user_queue, threading.Thread and _is_connected."""
        import threading
        from pynetdicom import AE  # comments too: assoc.dul.to_user_queue, dimse.
        from ._dimse.bridge import run_in_thread

        class Server:
            def __init__(self) -> None:
                self._lock = threading.Lock()
                self._ready = threading.Event()  # the package's own name on self

            def close(self) -> None:
                with self._lock:
                    self._ready.set()
                event = threading.Event()
                ae.dimse_timeout = self.timeouts.dimse  # a number, not the provider
                other._lock.acquire()  # the package defines _lock itself
        '''
    assert _check(clean) == []


def test_checker_own_names_shadow_pynetdicom_private_names() -> None:
    # _send is also a pynetdicom name; defined by a package class, it is the package's.
    assert _check("chosen._send(x)") == ["_send"]
    assert _check("chosen._send(x)", "class S:\n    def _send(self, x): pass") == []
    # ... but the names the issue lists stay pynetdicom's whoever defines them.
    defines_ready = "class S:\n    def __init__(self):\n        self._ready = 1"
    assert _check("assoc._ready.wait()", defines_ready) == ["_ready"]


def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package


def test_cycle_checker_finds_cycles(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "from .client import Client\n",
            "client.py": "from . import fanout\nclass Client: pass\n",
            "fanout.py": "from .sub.deep import helper\n",
            "sub/__init__.py": "",
            "sub/deep.py": "try:\n    from ..client import Client\nexcept ImportError:\n    pass\n",
            "a.py": "import pkg.b\n",
            "b.py": "if True:\n    from pkg import a\n",
        },
    )
    cycles = find_cycles(import_graph(package, "pkg"))
    assert sorted(cycles) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.client", "pkg.fanout", "pkg.sub.deep", "pkg.client"],
    ]


def test_cycle_checker_ignores_type_checking_and_function_imports(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "from .client import Client\n",
            "client.py": "from .fanout import run\nclass Client: pass\n",
            "fanout.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .client import Client\n"
                "def run() -> None:\n    from .client import Client\n"
            ),
            "status.py": "from . import __version__\n",
        },
    )
    graph = import_graph(package, "pkg")
    assert graph["pkg.client"] == {"pkg.fanout"}
    assert graph["pkg.fanout"] == set()
    assert graph["pkg.status"] == {"pkg"}  # the package itself, for a non-module name
    assert find_cycles(graph) == []


def test_pynetdicom_import_finder() -> None:
    source = textwrap.dedent(
        """
        import pydicom
        from pynetdicom import AE
        def f():
            import pynetdicom.sop_class
        from .pynetdicom_like import x
        """
    )
    found = pynetdicom_imports("m.py", source)
    assert [(v.line, v.name) for v in found] == [(3, "pynetdicom"), (5, "pynetdicom.sop_class")]


def test_the_room_itself_is_what_the_checker_finds() -> None:
    """Run on the room, the checker finds what the room is for: it sees real code."""
    room = {relative(p): p.read_text(encoding="utf-8") for p in (PACKAGE_DIR / ROOM).rglob("*.py")}
    assert check_sources(room), "the checker finds nothing even in aiodicomnet/_dimse/"
