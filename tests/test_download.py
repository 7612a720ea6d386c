"""Taskonomy downloads against a local HTTP server: resume, checksums, safe all-or-nothing extraction."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mtlrobust import cli
from mtlrobust.data import download as dl


# ----------------------------------------------------------------------------------------- test server
class _Handler(BaseHTTPRequestHandler):
    """Serves server.files with Range support; server.rules[path] can misbehave (see _rule)."""

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        srv = self.server
        rng = self.headers.get("Range")
        rule = srv.rules.get(self.path, {})
        entry = {"method": self.command, "path": self.path, "range": rng, "sent": 0}
        srv.requests.append(entry)
        if rule.get("status_times", 0) > 0:
            rule["status_times"] -= 1
            self.send_error(rule["status"])
            return
        if self.path not in srv.files:
            self.send_error(404)
            return
        data = srv.files[self.path]
        start = 0
        if rng and not rule.get("ignore_range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        payload = data[start:]
        if rule.get("drop_times", 0) > 0:  # announce the full length, send part of it, hang up
            rule["drop_times"] -= 1
            payload = payload[: rule["drop_after"]]
            self.close_connection = True
        self.wfile.write(payload)
        entry["sent"] = len(payload)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.rules, srv.requests = {}, {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/taskonomy/"
    srv.template = srv.base + "{building}_{domain}.tar"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------------- archives
def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tar(members: dict[str, bytes | tuple[str, str]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):  # ("symlink", target)
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _views(domain: str, n: int = 3, seed: int = 0) -> dict[str, bytes]:
    return {f"point_{i}_view_{i % 2}_domain_{domain}.png": _png(seed + i) for i in range(n)}


def _publish(srv, building: str, domain: str, views: dict[str, bytes], prefix: str | None = None) -> bytes:
    prefix = domain if prefix is None else prefix
    data = _tar({f"{prefix}/{name}": png for name, png in views.items()})
    srv.files[f"/taskonomy/{building}_{domain}.tar"] = data
    return data


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _landed(dest, building, domain) -> dict[str, bytes]:
    folder = dest / domain / "taskonomy" / building
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def _leftovers(dest) -> list[str]:
    """Files left in the download work folder (partial or moved-aside archives), relative to it."""
    work = dest / dl.WORK_DIR
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) if work.exists() else []


# ---------------------------------------------------------------------------------------------- tests
def test_download_verifies_md5_and_lands_in_omnitools_layout(server, tmp_path):
    views = {d: _views(d, seed=i * 10) for i, d in enumerate(("rgb", "normal"))}
    md5s = {f"./{b}_{d}.tar": _md5(_publish(server, b, d, views[d])) for b in ("ab", "cd") for d in views}
    out = dl.download(["ab", "cd"], ["rgb", "normal"], tmp_path, url_template=server.template, md5s=md5s)
    assert [o.status for o in out] == ["downloaded"] * 4
    for b in ("ab", "cd"):
        for d in views:
            assert _landed(tmp_path, b, d) == views[d]
    assert not (tmp_path / dl.WORK_DIR).exists()  # archives deleted, temporary folders removed
    assert all(r["range"] is None for r in server.requests) and len(server.requests) == 4


def test_md5_list_file_is_parsed_like_md5sum(tmp_path):
    f = tmp_path / "md5sum.txt"
    f.write_text(
        "9f9752d74b07bcc164af4a6c61b0eca1  yscloskey_point_info.tar\n\n" + "A" * 32 + " ./x/ab_rgb.tar\n"
    )
    md5s = dl.read_md5_list(f)
    assert dl.md5_for("https://datasets.epfl.ch/taskonomy/yscloskey_point_info.tar", md5s).startswith("9f97")
    assert dl.md5_for("http://h/base/x/ab_rgb.tar", md5s) == "a" * 32
    assert dl.md5_for("http://h/base/ab_normal.tar", md5s) is None
    f.write_text("not-an-md5 file.tar\n")
    with pytest.raises(ValueError, match="md5sum.txt:1"):
        dl.read_md5_list(f)


def test_interrupted_transfer_resumes_with_range_and_is_byte_identical(server, tmp_path):
    views = _views("rgb", n=4)
    data = _publish(server, "ab", "rgb", views)
    path = "/taskonomy/ab_rgb.tar"
    cut = len(data) // 3
    server.rules[path] = {"drop_times": 1, "drop_after": cut}
    kw = dict(
        url_template=server.template, md5s={"ab_rgb.tar": _md5(data)}, backoff=0, timeout=5, keep_archive=True
    )
    with pytest.raises(dl.DownloadError, match="giving up after 1 failed attempt"):
        dl.download_one("ab", "rgb", tmp_path, retries=0, **kw)
    # the interrupted file never looks complete
    assert _leftovers(tmp_path) == ["archives/ab_rgb.tar.part"] and _landed(tmp_path, "ab", "rgb") == {}
    assert (tmp_path / dl.WORK_DIR / "archives/ab_rgb.tar.part").stat().st_size == cut

    assert dl.download_one("ab", "rgb", tmp_path, retries=0, **kw).status == "downloaded"
    assert [(r["range"], r["sent"]) for r in server.requests] == [
        (None, cut),
        (f"bytes={cut}-", len(data) - cut),
    ]
    assert (tmp_path / dl.WORK_DIR / "archives/ab_rgb.tar").read_bytes() == data
    assert _landed(tmp_path, "ab", "rgb") == views


def test_retries_within_one_call_resume_after_each_drop_and_server_errors(server, tmp_path):
    data = _publish(server, "ab", "rgb", _views("rgb", n=4))
    path = "/taskonomy/ab_rgb.tar"
    server.rules[path] = {"drop_times": 2, "drop_after": len(data) // 4, "status_times": 1, "status": 503}
    # retries=1 suffices: an attempt that received bytes restarts the count of failures in a row
    dl.download_one("ab", "rgb", tmp_path, url_template=server.template, retries=1, backoff=0, timeout=5)
    q = len(data) // 4
    assert [r["range"] for r in server.requests] == [None, None, f"bytes={q}-", f"bytes={2 * q}-"]
    assert len(_landed(tmp_path, "ab", "rgb")) == 4


def test_server_ignoring_range_restarts_and_416_means_already_whole(server, tmp_path):
    data = _publish(server, "ab", "rgb", _views("rgb"))
    url = server.template.format(building="ab", domain="rgb")
    target = tmp_path / "a.tar"
    (tmp_path / "a.tar.part").write_bytes(b"garbage that must not survive")
    server.rules["/taskonomy/ab_rgb.tar"] = {"ignore_range": True}
    dl.fetch(url, target, md5=_md5(data), retries=0, timeout=5)
    assert target.read_bytes() == data

    server.rules.clear()
    target2 = tmp_path / "b.tar"
    (tmp_path / "b.tar.part").write_bytes(data)  # whole file left as .part (e.g. killed before the rename)
    dl.fetch(url, target2, md5=_md5(data), retries=0, timeout=5)
    assert target2.read_bytes() == data
    assert server.requests[-1]["range"] == f"bytes={len(data)}-" and server.requests[-1]["sent"] == 0


def test_checksum_mismatch_names_file_and_md5s_and_extracts_nothing(server, tmp_path):
    data = _publish(server, "ab", "normal", _views("normal"))
    wrong = "0" * 32
    with pytest.raises(dl.DownloadError) as err:
        dl.download(["ab"], ["normal"], tmp_path, url_template=server.template, md5s={"ab_normal.tar": wrong})
    msg = str(err.value)
    assert "ab_normal.tar" in msg and wrong in msg and _md5(data) in msg and "moved aside" in msg
    assert _landed(tmp_path, "ab", "normal") == {}
    assert _leftovers(tmp_path) == ["archives/ab_normal.tar.md5-mismatch"]


def test_404_names_the_url_without_retrying(server, tmp_path):
    url = server.template.format(building="ab", domain="rgb")
    with pytest.raises(dl.DownloadError, match=re.escape(f"{url}: HTTP 404")):
        dl.download(["ab"], ["rgb"], tmp_path, url_template=server.template, retries=3, backoff=0)
    assert len(server.requests) == 1 and _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["inside a member", "between members"])
def test_corrupt_archive_is_named_and_nothing_is_extracted(server, tmp_path, where):
    views = _views("rgb", n=3)
    data = _tar({f"rgb/{n}": v for n, v in views.items()})
    first = 512 + -(-len(next(iter(views.values()))) // 512) * 512  # header + padded data of member 1
    cut = first + 700 if where == "inside a member" else first
    server.files["/taskonomy/ab_rgb.tar"] = data[:cut]
    with pytest.raises(dl.DownloadError, match=r"corrupt archive .*ab_rgb\.tar.*nothing was extracted"):
        dl.download(["ab"], ["rgb"], tmp_path, url_template=server.template)
    assert not (tmp_path / "rgb").exists()
    assert _leftovers(tmp_path) == ["archives/ab_rgb.tar.corrupt"]


@pytest.mark.parametrize(
    "name, content",
    [("../evil", b"x"), ("/mtlrobust-test-evil", b"x"), ("rgb/link", ("symlink", "/etc/passwd"))],
    ids=["dotdot", "absolute", "symlink-out"],
)
def test_unsafe_member_is_refused(server, tmp_path, name, content):
    dest = tmp_path / "raw"
    server.files["/taskonomy/ab_rgb.tar"] = _tar(
        {"rgb/point_0_view_0_domain_rgb.png": _png(0), name: content}
    )
    with pytest.raises(dl.DownloadError, match=r"unsafe archive .*ab_rgb\.tar"):
        dl.download(["ab"], ["rgb"], dest, url_template=server.template)
    assert not (dest / "rgb").exists() and not any(tmp_path.rglob("*evil"))
    assert _leftovers(dest) == ["archives/ab_rgb.tar.corrupt"]


def test_archive_holding_domain_then_building_folder(server, tmp_path):
    views = _views("reshading")
    _publish(server, "ab", "reshading", views, prefix="reshading/ab")
    dl.download(["ab"], ["reshading"], tmp_path, url_template=server.template)
    assert _landed(tmp_path, "ab", "reshading") == views


def test_one_archive_per_building_like_a_repository_snapshot(server, tmp_path):
    """A template without {domain} (e.g. a GitHub tarball of the sample building): one GET, all domains."""
    views = {d: _views(d, seed=i) for i, d in enumerate(("rgb", "segment_semantic", "normal"))}
    members = {f"sample-master/{d}/{n}": png for d, v in views.items() for n, png in v.items()}
    server.files["/taskonomy/cauthron.tar.gz"] = _tar(members, mode="w:gz")
    template = server.base + "{building}.tar.gz"
    dl.download(["cauthron"], ["rgb", "segment_semantic"], tmp_path, url_template=template)
    assert [r["path"] for r in server.requests] == ["/taskonomy/cauthron.tar.gz"]
    for d in ("rgb", "segment_semantic"):
        assert _landed(tmp_path, "cauthron", d) == views[d]
    assert not (tmp_path / "normal").exists()
    with pytest.raises(dl.DownloadError, match=r"no \(or an empty\) folder for domain\(s\) \['reshading'\]"):
        dl.download(["cauthron"], ["normal", "reshading"], tmp_path, url_template=template)
    assert not (tmp_path / "normal").exists()  # all or nothing: normal was in the archive, yet not moved


def test_forbidden_building_and_complete_destination_are_skipped(server, tmp_path, caplog):
    forbidden = sorted(dl.forbidden_buildings())[0]
    done = tmp_path / "rgb" / "taskonomy" / "ab"
    done.mkdir(parents=True)
    (done / "point_0_view_0_domain_rgb.png").write_bytes(b"kept")
    with caplog.at_level(logging.INFO, logger=dl.__name__):
        out = dl.download([forbidden, "ab"], ["rgb"], tmp_path, url_template=server.template)
    assert [o.status for o in out] == ["forbidden", "skipped"]
    assert server.requests == []
    assert (
        f"skipping {forbidden} (rgb)" in caplog.text
        and "excluded" in caplog.text
        and "already complete" in caplog.text
    )
    assert (done / "point_0_view_0_domain_rgb.png").read_bytes() == b"kept"


def test_unknown_domain_and_unsafe_building_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="'normals'"):
        dl.download(["ab"], ["normals"], tmp_path)
    with pytest.raises(ValueError, match="'../x'"):
        dl.download(["../x"], ["rgb"], tmp_path)
    assert {"rgb", "segment_semantic", "depth_euclidean", "point_info"} <= set(dl.known_domains())


def test_split_csv_with_cr_line_endings(tmp_path):
    (tmp_path / "train_val_test_tiny.csv").write_bytes(
        b"id,train,val,test\rab,1,0,0\rcd,0,1,0\ref,0,0,1\rgh,0,0,0\r"
    )
    assert dl.read_split_buildings(tmp_path, "train") == ["ab"]
    assert dl.read_split_buildings(tmp_path / "train_val_test_tiny.csv", "test") == ["ef"]
    assert dl.read_split_buildings(tmp_path, "all", subset="tiny") == ["ab", "cd", "ef"]


def test_cli_needs_licence_then_downloads_a_split_in_parallel(server, tmp_path, capsys):
    views = {b: _views("segmentsemantic", seed=i) for i, b in enumerate(("ab", "cd", "ef"))}
    md5s = [
        f"{_md5(_publish(server, b, 'segment_semantic', v))}  {b}_segment_semantic.tar"
        for b, v in views.items()
    ]
    server.files["/taskonomy/md5sum.txt"] = "\n".join(md5s).encode()
    csv_path = tmp_path / "split.csv"
    csv_path.write_bytes(b"id,train,val,test\rab,1,0,0\rcd,1,0,0\ref,0,1,0\r")
    args = ["download", "--dest", str(tmp_path / "raw"), "--split-csv", str(csv_path), "--split", "train",
            "--domains", "segment_semantic", "--url-template", server.template,
            "--connections", "2", "--md5", server.base + "md5sum.txt"]  # fmt: skip
    assert cli.main(args) == 2 and server.requests == []
    assert "non-commercial" in capsys.readouterr().out
    assert cli.main([*args, "--agree-licence"]) == 0
    for b in ("ab", "cd"):
        assert _landed(tmp_path / "raw", b, "segment_semantic") == views[b]
    assert _landed(tmp_path / "raw", "ef", "segment_semantic") == {}
    assert sorted(r["path"] for r in server.requests if r["method"] == "GET") == [
        "/taskonomy/ab_segment_semantic.tar",
        "/taskonomy/cd_segment_semantic.tar",
        "/taskonomy/md5sum.txt",
    ]
    assert cli.main([*args, "--agree-licence", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("  complete  ") == 2


def test_cli_rejects_bad_arguments_before_any_request(server, tmp_path, capsys):
    base = ["download", "--dest", str(tmp_path), "--agree-licence", "--url-template", server.template]
    assert cli.main([*base, "--buildings", "ab", "--domains", "normals"]) == 2
    assert "'normals'" in capsys.readouterr().err
    assert cli.main([*base, "--split-csv", str(tmp_path / "nope.csv"), "--domains", "rgb"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert (
        cli.main([*base[:4], "--url-template", "http://x/{domain}.tar", "--buildings", "a,b", "--tasks", "s"])
        == 2
    )
    assert "{building}" in capsys.readouterr().err
    assert server.requests == []


def test_cli_exit_code_1_on_failure_and_dry_run_sizes(server, tmp_path, capsys):
    args = ["download", "--dest", str(tmp_path), "--buildings", "zz", "--domains", "rgb", "--agree-licence",
            "--url-template", server.template, "--retries", "0"]  # fmt: skip
    assert cli.main(args) == 1
    server.files["/taskonomy/ab_rgb.tar"] = b"x" * 3000
    server.files["/taskonomy/ab_segment_semantic.tar"] = b"x" * 500
    args = ["download", "--dest", str(tmp_path), "--buildings", "ab", "--tasks", "s", "--agree-licence",
            "--url-template", server.template, "--dry-run"]  # fmt: skip
    capsys.readouterr()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        f"    2.93kB  {server.template.format(building='ab', domain='rgb')}",
        f"      500B  {server.template.format(building='ab', domain='segment_semantic')}",
        "to download: 3.42kB",
    ]
    assert [r["method"] for r in server.requests[-2:]] == ["HEAD", "HEAD"]
    assert cli.main([*args[:4], "zz", *args[5:]]) == 1
