"""`.shoalignore`: gitignore-syntax patterns at a shared folder's root naming paths left out of its versions.

Only the file at the root counts (nested ones are ordinary files). It stays in
the version itself, as git keeps .gitignore, so a fetched copy re-shares the same.
Patterns match paths relative to the root; an ignored directory is not entered.
The scanner drops ignored entries before it fingerprints a directory listing, so
editing `.shoalignore` changes the fingerprints it affects and a re-share sees it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pathspec

from shoal.errors import ShareError

IGNORE_FILE = ".shoalignore"


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """The compiled patterns of one root's `.shoalignore`."""

    spec: pathspec.PathSpec

    def excludes(self, rel: str, is_dir: bool) -> bool:
        """Whether the path (relative to the root, "/"-separated) is ignored."""
        return self.spec.match_file(f"{rel}/" if is_dir else rel)


def load_ignore(root: Path | str) -> IgnoreRules | None:
    """The rules of `root/.shoalignore`, or None when there is none (the common, free case)."""
    path = os.path.join(root, IGNORE_FILE)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ShareError(f"cannot read {path}: {e.strerror}; fix its permissions or remove it") from None
    lines = data.decode("utf-8", errors="replace").splitlines()
    return IgnoreRules(pathspec.GitIgnoreSpec.from_lines(lines))
