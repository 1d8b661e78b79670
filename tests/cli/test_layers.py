"""The CLI is a client: it reaches the daemon through its socket, not its internals."""

import ast
from pathlib import Path

import shoal.cli

CLI = Path(shoal.cli.__file__).parent
#: What any CLI module may import from shoal.
ALLOWED = ("shoal.cli", "shoal.client", "shoal.home", "shoal.errors", "shoal.protocol")
#: Imported inside the one command that needs each, never at module level.
LAZY_ONLY = {
    "shoal.daemon.main": "commands/daemon.py",  # `shoal daemon` runs the daemon in the foreground
    "shoal.daemon.config": "commands/config.py",  # `shoal config` edits the file while the daemon may be down
    "shoal.tui.app": "commands/tui.py",  # `shoal tui`
}


def shoal_imports(tree: ast.Module):
    """(module, at module level?) for every import of shoal in `tree`."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "shoal" else [f"shoal.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "shoal":
                yield name, id(node) in top


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_cli_imports_only_client_side_modules_and_three_commands_their_own_lazily():
    seen = set()
    for path in sorted(CLI.rglob("*.py")):
        where = path.relative_to(CLI).as_posix()
        for name, top_level in shoal_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name in LAZY_ONLY:
                assert LAZY_ONLY[name] == where and not top_level, f"{where} imports {name}"
                seen.add(name)
            else:
                assert name == "shoal.__version__" or any(within(name, package) for package in ALLOWED), (
                    f"{where} imports {name}"
                )
    assert seen == set(LAZY_ONLY)
