"""Listing every entry under a folder, so that nothing on disk escapes the count.

A walk reports each thing it finds exactly once: regular files and links to files as readable
entries; broken links, link loops, links that lead outside the walked folder, names that are not
valid UTF-8, and sockets/FIFOs/devices as entries with a problem (they are quarantined with it,
and never read). Links to folders inside the walked folder are followed like folders; links
that lead outside it are followed only when the caller allows it (a dataset assembled as a
link farm into another copy). Local folders are walked with os.scandir; gs://, s3:// and other
Beam filesystems are listed with FileSystems.match (object stores have neither links nor empty
folders).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True)
class Entry:
    path: str  # where it was found (a link keeps its own path; readers follow it)
    rel: str  # relative to the walked folder, '/'-separated
    size: int  # bytes of the file (0 where there is a problem)
    problem: str = ""  # why it cannot be read; "" for a readable file
    mtime_ns: int = 0  # last modification, nanoseconds since the epoch (0 where unknown)
    inode: int = 0  # local files: the inode read (a link's target's), checked again at open
    link: bool = False  # local files: found as a symbolic link (to a file inside the source)

    @property
    def parts(self) -> list[str]:
        return self.rel.split("/")

    @property
    def hidden(self) -> bool:
        """Inside or named like a hidden entry (.DS_Store, ._x.JPEG, .ipynb_checkpoints/...)."""
        return any(part.startswith(".") for part in self.parts)


def is_remote(path: str) -> bool:
    return "://" in path


OUTSIDE_SETTING = "follow_outside_links"


def walk(root: str, follow_outside: bool = False, within: str | None = None) -> Iterator[Entry]:
    """Every entry under `root`, recursively.

    Local folders are walked depth first with each folder's names sorted (so `a/x` comes before
    `a.b`); remote listings are sorted by path. Either way the order is the same on every run.
    A link whose real path lies outside `within` (default: `root`; the source root when a split
    folder is walked) is an entry with a problem unless `follow_outside`; a name that is not
    valid UTF-8 is reported with its bytes escaped.
    """
    if is_remote(root):
        yield from _walk_remote(root)
        return
    home = os.path.realpath(within or root)
    start = frozenset([os.path.realpath(root)])
    for entry in _walk_local(root, "", start, home, follow_outside):
        yield _named(entry)


def escaped(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (held as surrogates by Python) escaped."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _named(entry: Entry) -> Entry:
    """An entry whose name cannot be written as UTF-8 (in a record, a report, a log) is
    quarantined under its escaped name; it is never read."""
    if is_valid_name(entry.path):
        return entry
    return Entry(
        escaped(entry.path), escaped(entry.rel), 0, entry.problem or "file name is not valid UTF-8"
    )


def _contains(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _loops_back(real: str, ancestors: frozenset[str]) -> bool:
    """Whether a folder link's target holds the walk itself: following it would come round again.

    Not only a link to a folder on the current path: one to a folder above the walked root
    (`train/n01/up -> ../..`) would first list everything beside the root, then loop.
    """
    return any(_contains(real, folder) for folder in ancestors)


def _scandir(folder: str) -> list[os.DirEntry]:
    """The entries of a folder; a folder that cannot be listed stops discovery with its name
    (its files could be counted neither as stored nor as quarantined)."""
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as err:
        raise ValueError(f"{folder}: cannot list this folder ({err.strerror or err})") from err


def _walk_local(
    folder: str, prefix: str, ancestors: frozenset[str], home: str, follow_outside: bool
) -> Iterator[Entry]:
    entries = _scandir(folder)
    for entry in entries:
        rel = prefix + entry.name
        link = entry.is_symlink()
        if link and not os.path.exists(entry.path):
            target = escaped(os.readlink(entry.path))
            yield Entry(entry.path, rel, 0, f"broken symbolic link (points to {target})")
        elif link and not follow_outside and not _contains(home, os.path.realpath(entry.path)):
            # Resolved before anything is opened: nothing outside the source is ever read.
            target = escaped(os.path.realpath(entry.path))
            yield Entry(
                entry.path, rel, 0,
                f"link outside the source (points to {target}); set {OUTSIDE_SETTING} to read it",
            )  # fmt: skip
        elif entry.is_dir():  # follows links to folders
            real = os.path.realpath(entry.path)
            if _loops_back(real, ancestors):
                yield Entry(entry.path, rel, 0, f"symbolic link loop (back to {escaped(real)})")
            else:
                yield from _walk_local(
                    entry.path, rel + "/", ancestors | {real}, home, follow_outside
                )
        elif entry.is_file():  # follows links to files
            stat = entry.stat()
            yield Entry(entry.path, rel, stat.st_size, mtime_ns=stat.st_mtime_ns,
                        inode=stat.st_ino, link=link)  # fmt: skip
        else:
            yield Entry(entry.path, rel, 0, "not a regular file (socket, FIFO or device)")


def _walk_remote(root: str) -> Iterator[Entry]:
    prefix = root.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "**"])[0].metadata_list
    for meta in sorted(matched, key=lambda m: m.path):
        rel = meta.path[len(prefix) :]
        if rel and not rel.endswith("/"):  # "folder/" placeholder objects are not files
            updated = getattr(meta, "last_updated_in_seconds", None) or 0
            yield Entry(meta.path, rel, meta.size_in_bytes, mtime_ns=int(updated * 1e9))


def children(folder: str) -> tuple[list[str], list[str]]:
    """(sub-folder names, other entry names) directly under `folder`, each sorted.

    A link that loops back is not a sub-folder, as in `walk`: under train/ it is no class.
    """
    if not is_remote(folder):
        dirs, others = [], []
        home = frozenset([os.path.realpath(folder)])
        for entry in _scandir(folder):
            loop = entry.is_symlink() and _loops_back(os.path.realpath(entry.path), home)
            (dirs if entry.is_dir() and not loop else others).append(entry.name)
        return sorted(dirs), sorted(others)
    prefix = folder.rstrip("/") + "/"
    dirs, others = set(), set()
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        rest = meta.path[len(prefix) :]
        if "/" in rest:
            dirs.add(rest.split("/", 1)[0])
        elif rest:
            others.add(rest)
    return sorted(dirs), sorted(others)


def is_dir(path: str) -> bool:
    if is_remote(path):
        # object stores have no folders: one object under the prefix makes it one
        return bool(FileSystems.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list)
    return os.path.isdir(path)
