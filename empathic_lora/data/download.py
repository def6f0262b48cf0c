"""Fetching the official EmpatheticDialogues archive: download, verify, extract safely.

Only used when no `data_dir` is given. URL and hash are arguments so tests can point them at a
local archive (`file://` or a server on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from empathic_lora.errors import UserError

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz"
OFFICIAL_SHA256 = "56f234d77b7dd1f005fd365bb17769cfe346c3c84295b69bc069c8ccb83be03d"
SPLIT_FILES = {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}
_CHUNK = 1 << 20



def check_data_dir(data_dir: Path, splits: list[str]) -> None:
    if not data_dir.is_dir():
        raise UserError(f"--data.data_dir {data_dir} does not exist (it should hold train.csv, valid.csv, test.csv)")
    missing = [SPLIT_FILES[s] for s in splits if not (data_dir / SPLIT_FILES[s]).is_file()]
    if missing:
        raise UserError(f"--data.data_dir {data_dir} lacks {', '.join(missing)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, destination: Path, sha256: str) -> None:
    """Download `url` to `destination`, refusing (and deleting) it if its sha256 differs."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = destination.with_name(destination.name + ".partial")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise UserError(
            f"could not download the EmpatheticDialogues archive from {url} ({reason}); "
            "pass --data.data_dir DIR pointing at a local copy of train.csv, valid.csv, test.csv"
        ) from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"the archive downloaded from {url} has sha256 {digest.hexdigest()}, expected {sha256}; "
            "it was deleted and not used"
        )
    partial.replace(destination)


def extract(archive: Path, target: Path) -> None:
    """Extract a .tar.gz into `target`; a member escaping it (`..`, absolute, link) is refused."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                # The "data" filter would quietly make an absolute name relative: refuse it instead.
                if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts:
                    raise tarfile.OutsideDestinationError(member, member.name)
            # The "data" filter refuses `..`, links out of the target, devices and odd permissions.
            tar.extractall(staging, filter="data")
        found = next((p.parent for p in staging.rglob("train.csv")), None)
        if found is None:
            raise UserError(f"archive {archive} has no train.csv")
        if target.exists():
            shutil.rmtree(target)
        found.replace(target)
    except tarfile.TarError as error:
        raise UserError(f"archive {archive} is unsafe or corrupt and was not extracted: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_downloaded(cache_dir: Path, url: str = OFFICIAL_URL, sha256: str = OFFICIAL_SHA256) -> Path:
    """The directory holding the three split files, downloading and extracting them once."""
    target = cache_dir / "empatheticdialogues" / sha256[:16]
    if all((target / name).is_file() for name in SPLIT_FILES.values()):
        return target
    archive = cache_dir / "downloads" / f"empatheticdialogues-{sha256[:16]}.tar.gz"
    if not (archive.is_file() and _sha256(archive) == sha256):  # a cached archive is re-verified too
        fetch(url, archive, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    extract(archive, target)
    return target
