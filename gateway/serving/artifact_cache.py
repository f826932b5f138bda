"""A local, content-addressed cache of downloaded model packages, shared by the workers of one replica.

Layout under the cache directory::

    sha256-<digest>/       a complete, verified package (its files' paths, sizes and bytes hash to <digest>)
    by-source/<key hash>   a symlink to the package directory downloaded for one source (tracking URI + artifact URI)
    tmp/                   downloads in progress (never loaded)
    locks/<key hash>.lock  one download per source at a time, whichever worker comes first

A download goes into a fresh directory under ``tmp/``; the fetcher checks every file's size against the
server's listing, the cache checks that an ``MLmodel`` file is there, hashes the tree, and renames the
directory to its digest (if another download of the same bytes won the race, this one is removed). The
``by-source`` link is written beside and renamed over, so a reader sees either no link or a complete
package: a half-written download never loads. Workers of one replica share the directory: the lock file
(``fcntl.flock``) makes the second worker wait for the first one's download and then reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.errors import InvalidPackage

MLMODEL_FILE = "MLmodel"
_CHUNK = 1 << 20


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path, size and bytes, in sorted path order."""
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(root).as_posix()
        digest.update(f"{rel}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


class ArtifactCache:
    """Packages downloaded once per replica, found again by the source they came from."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _dirs(self) -> tuple[Path, Path, Path]:
        by_source, tmp, locks = (self.directory / name for name in ("by-source", "tmp", "locks"))
        for path in (by_source, tmp, locks):
            path.mkdir(parents=True, exist_ok=True)
        return by_source, tmp, locks

    def cached(self, key: str) -> Path | None:
        """The complete package downloaded for ``key``, or None."""
        link = self.directory / "by-source" / _key_hash(key)
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return target if (target / MLMODEL_FILE).is_file() else None

    def get(self, key: str, fetch: Callable[[Path], None]) -> Path:
        """The package for ``key``: from the cache, else downloaded by ``fetch(into_directory)`` (which
        raises on a short or failed download), verified and renamed into place. Blocking."""
        found = self.cached(key)
        if found is not None:
            return found
        by_source, tmp, locks = self._dirs()
        key_hash = _key_hash(key)
        with _locked(locks / f"{key_hash}.lock"):
            found = self.cached(key)  # another worker finished it while this one waited
            if found is not None:
                return found
            download = Path(tempfile.mkdtemp(prefix="download-", dir=tmp))
            try:
                fetch(download)
                if not (download / MLMODEL_FILE).is_file():
                    raise InvalidPackage(f"The package downloaded from {key!r} has no {MLMODEL_FILE} file at its root.")
                final = self.directory / f"sha256-{tree_digest(download)}"
                try:
                    os.rename(download, final)
                except OSError:  # the same bytes are already there (another source, same package)
                    if not (final / MLMODEL_FILE).is_file():
                        raise
                    shutil.rmtree(download, ignore_errors=True)
            except BaseException:
                shutil.rmtree(download, ignore_errors=True)
                raise
            link_tmp = tmp / f"link-{key_hash}-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                link_tmp.unlink()
            os.symlink(os.path.relpath(final, by_source), link_tmp)
            os.replace(link_tmp, by_source / key_hash)
            return final


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
