"""A shoal whose C module was not built (no compiler at install, or a checkout pulled since)
says so and how to fix it, instead of an unexpected ModuleNotFoundError."""

from pathlib import Path

from shoal.protocol.control import ExitCode

#: Loaded by Python at start-up from PYTHONPATH: hides the C module as if it had never been built.
HIDE_C_MODULE = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "shoal.daemon.store._filebatch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
"""


def test_a_daemon_without_its_c_module_names_the_fix(tmp_path: Path, shoal) -> None:
    (tmp_path / "sitecustomize.py").write_text(HIDE_C_MODULE)
    hidden = {"PYTHONPATH": str(tmp_path)}
    for command in (("daemon",), ("daemon", "start")):
        process = shoal(*command, env=hidden)
        assert process.returncode in (ExitCode.ERROR, ExitCode.UNREACHABLE), process
        assert "C module is not built" in process.stderr, process.stderr
        assert "apt install gcc python3-dev" in process.stderr, process.stderr
        assert "unexpected" not in process.stderr, process.stderr
    assert shoal("daemon", "start").returncode == 0
