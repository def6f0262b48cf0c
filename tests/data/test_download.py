"""The official-archive path, against local stand-ins: a file:// URL and a server on 127.0.0.1."""

import http.server
import threading
from pathlib import Path

import pytest
from shared_helpers import CSV, make_archive, official_layout

from empathic_lora.data.download import ensure_downloaded
from empathic_lora.data.raw_csv import read_split
from empathic_lora.errors import UserError


def test_file_url_download_verifies_and_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = make_archive(archive, official_layout())
    data_dir = ensure_downloaded(tmp_path / "cache", archive.as_uri(), sha)
    rows = read_split(data_dir / "train.csv")
    assert rows[0].utterance == "I feel low, really"
    archive.unlink()  # a second call is served from the cache, without the source
    assert ensure_downloaded(tmp_path / "cache", archive.as_uri(), sha) == data_dir


def test_http_download_from_local_server(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    sha = make_archive(served / "ed.tar.gz", official_layout())
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
    make_archive(archive, official_layout())
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="expected 0{64}; it was deleted"):
        ensure_downloaded(cache, archive.as_uri(), "0" * 64)
    assert not list(cache.rglob("*.tar.gz*"))
    assert not (cache / "empatheticdialogues").exists() or not list((cache / "empatheticdialogues").rglob("*.csv"))


@pytest.mark.parametrize(
    "members,link",
    [
        ({**official_layout(), "../escaped.csv": CSV}, None),
        ({**official_layout(), "/tmp/absolute-escape.csv": CSV}, None),
        (official_layout(), ("empatheticdialogues/evil", "/etc/passwd")),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_path_escaping_archive_is_refused(tmp_path: Path, members: dict, link) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = make_archive(archive, members, link)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UserError, match="unsafe or corrupt"):
        ensure_downloaded(cache, archive.as_uri(), sha)
    assert not (tmp_path / "deep" / "escaped.csv").exists()
    assert not list(cache.rglob("*.csv"))


def test_unreachable_url_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--data.data_dir"):
        ensure_downloaded(tmp_path, "http://127.0.0.1:9/nothing.tar.gz", "0" * 64)
