"""Small-file system calls in batches, made in C with the GIL released once a batch (_filebatch.c)."""

from shoal.errors import NotBuilt

try:
    from shoal.daemon.store._filebatch import drop_cached, read_into, replace, will_need, write_new
except ImportError as e:
    raise NotBuilt(
        "shoal's C module is not built; reinstall shoal (`./scripts/run`, or `pip install -e .` in its "
        "checkout) on a machine with a C compiler and Python's headers (apt install gcc python3-dev)"
    ) from e

__all__ = ["drop_cached", "read_into", "replace", "will_need", "write_new"]
