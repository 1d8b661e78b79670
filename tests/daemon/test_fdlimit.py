"""The bounded pool of open files a fetch keeps its partial files in."""

import os

from shoal.daemon.store.fdlimit import FilePool


class Opener:
    """Opens /dev/null for any key, counting the opens."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, key: object) -> int:
        self.opened.append(str(key))
        return os.open(os.devnull, os.O_RDONLY)


def test_keeps_at_most_size_open_closing_the_least_recently_used() -> None:
    opener = Opener()
    pool = FilePool(2, opener)
    for key in "abca":
        with pool.use(key):
            pass
        assert len(pool) <= 2
    # "a" was the least recently used when "c" came, so it was closed and is opened again.
    assert opener.opened == ["a", "b", "c", "a"]
    with pool.use("c"):
        pass
    assert opener.opened == ["a", "b", "c", "a"]
    pool.close_all()
    assert len(pool) == 0


def test_a_file_in_use_is_never_closed_under_its_user() -> None:
    pool = FilePool(1, Opener())
    with pool.use("a") as held:
        for key in "bcd":
            with pool.use(key):
                pass
        os.fstat(held)  # still open: raises EBADF if the pool closed it
        # Over its size only while every open file is in use: "d" was closed on release.
        assert len(pool) == 1
    assert len(pool) == 1
    pool.close_all()
