"""The official-archive path, against local stand-ins: a file:// URL and a server on 127.0.0.1."""

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from empathic_lora.download import ensure_downloaded
from empathic_lora.errors import UserError
from empathic_lora.parsing import FIELDS, read_split

CSV = ",".join(FIELDS) + "\nc0,1,sad,a situation,0,I feel low_comma_ really,,\nc0,2,sad,a situation,1,I am sorry.,,\n"


def _archive(path: Path, members: dict[str, str], link: tuple[str, str] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _official_layout() -> dict[str, str]:
    return {f"empatheticdialogues/{name}": CSV for name in ("train.csv", "valid.csv", "test.csv")}


def test_file_url_download_verifies_and_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = _archive(archive, _official_layout())
    data_dir = ensure_downloaded(tmp_path / "cache", archive.as_uri(), sha)
    rows = read_split(data_dir / "train.csv")
    assert rows[0].utterance == "I feel low, really"
    archive.unlink()  # a second call is served from the cache, without the source
    assert ensure_downloaded(tmp_path / "cache", archive.as_uri(), sha) == data_dir


def test_http_download_from_local_server(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    sha = _archive(served / "ed.tar.gz", _official_layout())
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ed.tar.gz"
        data_dir = ensure_downloaded(tmp_path / "cache", url, sha)
    finally:
        server.shutdown()
    assert len(read_split(data_dir / "test.csv")) == 2


def test_tampered_archive_is_refused_and_removed(tmp_path: Path) -> None:
    archive = tmp_path / "ed.tar.gz"
    _archive(archive, _official_layout())
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="expected 0{64}; it was deleted"):
        ensure_downloaded(cache, archive.as_uri(), "0" * 64)
    assert not list(cache.rglob("*.tar.gz*"))
    assert not (cache / "empatheticdialogues").exists() or not list((cache / "empatheticdialogues").rglob("*.csv"))


@pytest.mark.parametrize(
    "members,link",
    [
        ({**_official_layout(), "../escaped.csv": CSV}, None),
        ({**_official_layout(), "/tmp/absolute-escape.csv": CSV}, None),
        (_official_layout(), ("empatheticdialogues/evil", "/etc/passwd")),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_path_escaping_archive_is_refused(tmp_path: Path, members: dict, link) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = _archive(archive, members, link)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UserError, match="unsafe or corrupt"):
        ensure_downloaded(cache, archive.as_uri(), sha)
    assert not (tmp_path / "deep" / "escaped.csv").exists()
    assert not list(cache.rglob("*.csv"))


def test_unreachable_url_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--data.data_dir"):
        ensure_downloaded(tmp_path, "http://127.0.0.1:9/nothing.tar.gz", "0" * 64)
