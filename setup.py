"""shoal's compiled parts, built by `pip install` (the rest of the metadata is in pyproject.toml).

_filebatch is plain C and always built. _chunkhash links the `blake3` crate through
native/chunkhash, built with cargo: offline from Debian's packaged crates
(librust-blake3-dev) where they are installed, from crates.io otherwise. Without
cargo it is left out and shoal hashes one chunk per call (slower, same ids).
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CRATE = HERE / "native" / "chunkhash"
DEBIAN_CRATES = Path("/usr/share/cargo/registry")
CFLAGS = ["-O2", "-Wall", "-Werror=implicit-function-declaration"]
CHUNKHASH = "shoal.daemon.store._chunkhash"


class BuildExt(build_ext):
    """build_ext that first builds the Rust static library _chunkhash links, or skips _chunkhash."""

    def build_extension(self, ext: Extension) -> None:
        if ext.name == CHUNKHASH:
            library = self._cargo_build()
            if library is None:
                return
            ext.extra_objects = [str(library)]
        super().build_extension(ext)

    def _cargo_build(self) -> Path | None:
        cargo = shutil.which("cargo")
        if cargo is None:
            print(f"shoal: cargo not found, {CHUNKHASH} left out: chunks are hashed one per call (apt install cargo)")
            return None
        target = Path(self.build_temp).resolve() / "cargo"
        command = [cargo, "build", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml")]
        command += ["--target-dir", str(target)]
        if any(DEBIAN_CRATES.glob("blake3-1.*")):
            command += ["--offline", "--config", 'source.crates-io.replace-with="debian"']
            command += ["--config", f'source.debian.directory="{DEBIAN_CRATES}"']
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"shoal: building native/chunkhash failed, {CHUNKHASH} left out:\n{done.stderr}")
            return None
        return target / "release" / "libshoal_chunkhash.a"


setup(
    ext_modules=[
        Extension(
            "shoal.daemon.store._filebatch",
            sources=["shoal/daemon/store/_filebatch.c"],
            extra_compile_args=CFLAGS,
        ),
        Extension(
            CHUNKHASH,
            sources=["shoal/daemon/store/_chunkhash.c"],
            extra_compile_args=CFLAGS,
            # What Rust's standard library needs from the system, for a static link.
            libraries=["gcc_s", "pthread", "dl", "m"],
            # Only the parts of the static library that are called, without symbols.
            extra_link_args=["-Wl,--gc-sections", "-s"],
        ),
    ],
    cmdclass={"build_ext": BuildExt},
)
