"""The CIFAR loader: archive format, checks and their errors, download, cache and atomic writes.

Most tests use a tiny archive in the official CIFAR-10 python format (4 images per batch) with a
CifarSpec pointing at it; downloads come from an HTTP server on 127.0.0.1. The last tests read the
real CIFAR-10 from shared/data when it is there.
"""

import dataclasses
import hashlib
import http.client
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import minivit.data
from minivit.data import CIFAR10, DataError, Dataset, cifar, default_data_dir, load_cifar, read_archive

FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = ("test_batch",)
META = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N = 4  # images per batch


# --- a tiny archive in the official format ---------------------------------------------------------------------


def make_batches(n=N):
    """{member name: the dict it pickles} for a small CIFAR-10, with pixels and labels from a fixed seed."""
    rng = np.random.default_rng(0)
    batches = {}
    for k, name in enumerate(TRAIN + TEST):
        batches[name] = {
            b"batch_label": f"batch {k + 1} of 6".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"image_{k}_{i}.png".encode() for i in range(n)],
        }
    batches[META] = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": n, b"num_vis": 3072}
    return batches


def write_tar_gz(path, members, folder=FOLDER):
    """A .tar.gz with `folder/name` holding the bytes of each member."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return Path(path)


def md5_bytes(b):
    return hashlib.md5(b).hexdigest()


def md5_file(path):
    return md5_bytes(Path(path).read_bytes())


class Fake:
    """A small CIFAR-10 archive, the CifarSpec that accepts it, and the arrays it holds."""

    def __init__(self, folder, batches=None, url="http://127.0.0.1:1/cifar-10-python.tar.gz"):
        self.batches = batches or make_batches()
        self.members = {name: pickle.dumps(b, protocol=2) for name, b in self.batches.items()}
        self.train_rows = np.concatenate([self.batches[m][b"data"] for m in TRAIN])
        self.test_rows = np.concatenate([self.batches[m][b"data"] for m in TEST])
        self.train_labels = np.concatenate([self.batches[m][b"labels"] for m in TRAIN]).astype(np.int64)
        self.test_labels = np.concatenate([self.batches[m][b"labels"] for m in TEST]).astype(np.int64)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.archive = write_tar_gz(folder / "cifar-10-python.tar.gz", self.members)
        self.spec = dataclasses.replace(
            CIFAR10,
            url=url,
            md5=md5_file(self.archive),
            content_md5={
                "train_data": md5_bytes(self.train_rows.tobytes()),
                "train_labels": md5_bytes(self.train_labels.astype(np.uint8).tobytes()),
                "test_data": md5_bytes(self.test_rows.tobytes()),
                "test_labels": md5_bytes(self.test_labels.astype(np.uint8).tobytes()),
            },
        )

    def assert_loaded(self, data):
        assert data.train_images.shape == (5 * N, 32, 32, 3) and data.train_images.dtype == np.uint8
        assert data.test_images.shape == (N, 32, 32, 3) and data.test_images.dtype == np.uint8
        assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
        np.testing.assert_array_equal(data.train_labels, self.train_labels)
        np.testing.assert_array_equal(data.test_labels, self.test_labels)
        assert data.classes == CLASSES
        # every pixel from its CHW row: red at i*32+j, green 1024 further, blue 2048 further
        i, j = np.indices((32, 32))
        for images, rows in ((data.train_images, self.train_rows), (data.test_images, self.test_rows)):
            for c in range(3):
                np.testing.assert_array_equal(images[:, :, :, c], rows[:, c * 1024 + i * 32 + j])


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path / "source")


def no_temp_files(folder):
    """Names of leftover temporary files (downloads and cache writes) in `folder`."""
    return sorted(p.name for p in Path(folder).glob(".*") if p.name.startswith((".download-", ".tmp-")))


# --- a local HTTP server -------------------------------------------------------------------------------------------


class Server:
    """Serves `files` ({url path: bytes}) on 127.0.0.1; `mode` 'cut' or 'chunked-cut' stops half way."""

    def __init__(self):
        self.files, self.requests, self.mode = {}, [], "full"
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if outer.mode == "chunked-cut":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = body[: len(body) // 2]
                    self.wfile.write(f"{len(body):x}\r\n".encode() + half)  # announces all, sends half
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body if outer.mode == "full" else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self):
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def served(fake, server):
    """The fake archive served over HTTP; its spec's url points there."""
    server.files["/cifar-10-python.tar.gz"] = fake.archive.read_bytes()
    fake.spec = dataclasses.replace(fake.spec, url=server.url("/cifar-10-python.tar.gz"))
    return fake


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- reading archives and folders ----------------------------------------------------------------------------------


def test_good_archive_loads(fake, tmp_path):
    data = load_cifar(fake.spec, data_dir=tmp_path / "cache", source=fake.archive)
    fake.assert_loaded(data)
    # one pixel spelled out: image 5 is the second of data_batch_2, pixel (7, 19)
    row = fake.batches["data_batch_2"][b"data"][1]
    assert tuple(data.train_images[5, 7, 19]) == (row[7 * 32 + 19], row[1024 + 7 * 32 + 19], row[2048 + 7 * 32 + 19])
    assert data.train_images.flags.c_contiguous
    assert (tmp_path / "cache" / "cifar10.npz").is_file()
    assert no_temp_files(tmp_path / "cache") == []


def test_read_archive_writes_nothing(fake, tmp_path):
    before = sorted(p.name for p in fake.archive.parent.iterdir())
    fake.assert_loaded(read_archive(fake.archive, fake.spec))
    fake.assert_loaded(read_archive(str(fake.archive), fake.spec, trusted=True))
    assert sorted(p.name for p in fake.archive.parent.iterdir()) == before


def test_unpacked_folder_loads_the_same(fake, tmp_path):
    with tarfile.open(fake.archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for source in (tmp_path / "unpacked", tmp_path / "unpacked" / FOLDER):
        fake.assert_loaded(read_archive(source, fake.spec))
    fake.assert_loaded(load_cifar(fake.spec, data_dir=tmp_path / "cache", source=tmp_path / "unpacked"))


def test_unpacked_folder_missing_file(fake, tmp_path):
    with tarfile.open(fake.archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / FOLDER / "data_batch_4").unlink()
    with pytest.raises(DataError, match="has no file 'data_batch_4'") as e:
        read_archive(tmp_path / "unpacked", fake.spec)
    assert FOLDER in str(e.value)


def _set(name, key, value):
    def edit(batches):
        batches[name][key] = value

    return edit


def _replace_member(name, payload):
    def edit(members):
        members[name] = payload

    return edit


def _drop_member(name):
    def edit(members):
        del members[name]

    return edit


class RunsCode:
    """Unpickling this would run a shell command: the loader must refuse before calling anything."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


# (id, edit of the pickled dicts or None, edit of the member bytes or None, substrings of the message)
BROKEN_CONTENT = [
    ("wrong-shape", _set("data_batch_3", b"data", np.zeros((N, 3000), np.uint8)), None,
     ["'data_batch_3'", "(4, 3000)", "expected uint8 (n, 3072)"]),
    ("wrong-dtype", _set("data_batch_1", b"data", np.zeros((N, 3072), np.float32)), None,
     ["'data_batch_1'", "float32", "expected uint8"]),
    ("one-dimensional", _set("test_batch", b"data", np.zeros(3072, np.uint8)), None, ["'test_batch'", "(3072,)"]),
    ("label-out-of-range", _set("test_batch", b"labels", [0, 1, 2, 10]), None,
     ["'test_batch'", "labels outside [0, 10)"]),
    ("negative-label", _set("data_batch_5", b"labels", [0, -1, 2, 3]), None, ["'data_batch_5'", "outside [0, 10)"]),
    ("too-few-labels", _set("data_batch_1", b"labels", [0, 1, 2]), None, ["'data_batch_1'", "3 labels for 4 images"]),
    ("no-labels", _set("data_batch_2", b"labels", []), None, ["'data_batch_2'", "0 labels for 4 images"]),
    ("text-labels", _set("data_batch_2", b"labels", ["a", "b", "c", "d"]), None, ["'data_batch_2'", "labels"]),
    ("no-data-key", lambda b: b["data_batch_4"].pop(b"data"), None, ["'data_batch_4'", "has no ['data'] entry"]),
    ("no-labels-key", lambda b: b["data_batch_4"].pop(b"labels"), None, ["'data_batch_4'", "['labels']"]),
    ("nine-class-names", _set(META, b"label_names", [c.encode() for c in CLASSES[:9]]), None,
     ["'batches.meta'", "10 class names"]),
    ("no-class-names", lambda b: b[META].pop(b"label_names"), None, ["'batches.meta'", "10 class names"]),
    ("missing-member", None, _drop_member("data_batch_5"), [f"no member {FOLDER}/data_batch_5"]),
    ("missing-meta", None, _drop_member(META), [f"no member {FOLDER}/batches.meta"]),
    ("not-a-pickle", None, _replace_member("data_batch_2", b"not a pickle at all"),
     ["'data_batch_2'", "not a readable pickle"]),
    ("empty-member", None, _replace_member("test_batch", b""), ["'test_batch'", "not a readable pickle"]),
    ("text-member", None, _replace_member("data_batch_1", b"cifar\nbatch\n"),
     ["'data_batch_1'", "not a readable pickle"]),
    ("truncated-pickle", None, lambda m: m.update(data_batch_3=m["data_batch_3"][:100]),
     ["'data_batch_3'", "not a readable pickle"]),
    ("not-a-dict", None, _replace_member("data_batch_1", pickle.dumps([1, 2, 3])),
     ["'data_batch_1'", "holds a list, expected a dict"]),
    ("code-in-the-pickle", None, _replace_member("data_batch_1", pickle.dumps({b"data": RunsCode()})),
     ["'data_batch_1'", "refusing to load posix.system" if os.name == "posix" else "refusing to load"]),
]  # fmt: skip


@pytest.mark.parametrize("edit_batches, edit_members, expected", [c[1:] for c in BROKEN_CONTENT],
                         ids=[c[0] for c in BROKEN_CONTENT])  # fmt: skip
def test_broken_archive_content(tmp_path, edit_batches, edit_members, expected):
    batches = make_batches()
    if edit_batches:
        edit_batches(batches)
    members = {name: pickle.dumps(b, protocol=2) for name, b in batches.items()}
    if edit_members:
        edit_members(members)
    archive = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    spec = dataclasses.replace(CIFAR10, content_md5={})
    with pytest.raises(DataError) as e:
        load_cifar(spec, data_dir=tmp_path / "cache", source=archive)
    message = str(e.value)
    assert str(archive) in message
    for part in expected:
        assert part in message
    assert not (tmp_path / "cache" / "cifar10.npz").exists()


def test_archive_packed_with_dot_prefix(fake, tmp_path):
    """`tar -C folder -czf x.tar.gz .` stores ./cifar-10-batches-py/...: the same data."""
    archive = write_tar_gz(tmp_path / "dot.tar.gz", fake.members, folder=f"./{FOLDER}")
    fake.assert_loaded(load_cifar(fake.spec, data_dir=tmp_path / "cache", source=archive))


def test_truncated_archive(fake, tmp_path):
    blob = fake.archive.read_bytes()
    # cuts into the members (a cut in the trailing zero blocks alone loses no data; the content checksums still hold)
    for cut in (len(blob) // 2, len(blob) - 200, 30):
        truncated = tmp_path / f"cut{cut}.tar.gz"
        truncated.write_bytes(blob[:cut])
        with pytest.raises(DataError) as e:
            load_cifar(fake.spec, data_dir=tmp_path / "cache", source=truncated)
        assert str(truncated) in str(e.value)
        assert "not a readable .tar.gz archive" in str(e.value) and "truncated" in str(e.value)
    assert not (tmp_path / "cache" / "cifar10.npz").exists()


@pytest.mark.parametrize("payload", [b"", b"this is not an archive\n" * 50, bytes(range(256)) * 40],
                         ids=["empty", "text", "binary"])  # fmt: skip
def test_not_a_gzip(fake, tmp_path, payload):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="not a readable .tar.gz archive") as e:
        read_archive(path, fake.spec)
    assert str(path) in str(e.value)


def test_gzip_that_is_not_a_tar(fake, tmp_path):
    import gzip

    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(gzip.compress(b"plain text, no tar headers\n" * 100))
    with pytest.raises(DataError, match="not a readable .tar.gz archive"):
        read_archive(path, fake.spec)


def test_archive_of_another_folder(fake, tmp_path):
    path = write_tar_gz(tmp_path / "other.tar.gz", fake.members, folder="cifar-100-python")
    with pytest.raises(DataError, match=f"no member {FOLDER}/data_batch_1"):
        read_archive(path, fake.spec)


def test_content_md5_mismatch(fake, tmp_path):
    # the real CIFAR-10's content checksums do not match the fake's arrays
    with pytest.raises(DataError) as e:
        load_cifar(CIFAR10, data_dir=tmp_path / "cache", source=fake.archive)
    assert "md5" in str(e.value) and str(fake.archive) in str(e.value)
    assert "train data" in str(e.value) and CIFAR10.content_md5["train_data"] in str(e.value)
    # one wrong label is enough
    spec = dataclasses.replace(fake.spec, content_md5={**fake.spec.content_md5, "test_labels": "0" * 32})
    with pytest.raises(DataError, match="test labels has md5 .* expected 0{32}"):
        read_archive(fake.archive, spec)
    # a trusted archive (its file md5 was the official one) skips the content checks
    fake.assert_loaded(read_archive(fake.archive, spec, trusted=True))
    assert not (tmp_path / "cache" / "cifar10.npz").exists()


def test_missing_source_and_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar("cifar10", data_dir=tmp_path, source=tmp_path / "nowhere.tar.gz")
    with pytest.raises(DataError, match="does not exist"):
        read_archive(tmp_path / "nowhere", CIFAR10)
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_cifar("mnist", data_dir=tmp_path)


# --- download --------------------------------------------------------------------------------------------------------


def test_download_verifies_and_caches(served, server, tmp_path):
    data_dir = tmp_path / "data"
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))
    assert server.requests == ["/cifar-10-python.tar.gz"]
    archive = data_dir / "cifar-10-python.tar.gz"
    assert archive.is_file() and md5_file(archive) == served.spec.md5
    assert (data_dir / "cifar10.npz").is_file()
    assert no_temp_files(data_dir) == []
    server.stop()  # the second call must not need it
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))
    assert server.requests == ["/cifar-10-python.tar.gz"]


def test_download_with_wrong_md5_keeps_nothing(served, server, tmp_path):
    data_dir = tmp_path / "data"
    wrong = dataclasses.replace(served.spec, md5="0" * 32)
    with pytest.raises(DataError) as e:
        load_cifar(wrong, data_dir=data_dir)
    assert "md5" in str(e.value) and served.spec.md5 in str(e.value) and served.spec.url in str(e.value)
    assert sorted(p.name for p in data_dir.iterdir()) == []  # no archive, no cache, no .download-*
    # the right spec: the retry downloads again and succeeds
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))
    assert len(server.requests) == 2
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz", "cifar10.npz"]


def test_download_of_a_different_file_keeps_nothing(served, server, tmp_path):
    data_dir = tmp_path / "data"
    good = server.files["/cifar-10-python.tar.gz"]
    server.files["/cifar-10-python.tar.gz"] = good[:-1] + bytes([good[-1] ^ 1])  # one bit off
    with pytest.raises(DataError, match="md5"):
        load_cifar(served.spec, data_dir=data_dir)
    assert list(data_dir.iterdir()) == []
    server.files["/cifar-10-python.tar.gz"] = good
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))


def test_download_unreachable(fake, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz"
    with pytest.raises(DataError, match=f"could not download {url}"):
        load_cifar(dataclasses.replace(fake.spec, url=url), data_dir=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_download_not_found(served, server, tmp_path):
    spec = dataclasses.replace(served.spec, url=server.url("/missing/cifar-10-python.tar.gz"))
    with pytest.raises(DataError, match="could not download .*404"):
        load_cifar(spec, data_dir=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_download_off(fake, tmp_path):
    with pytest.raises(DataError, match="downloading is off"):
        load_cifar(fake.spec, data_dir=tmp_path / "data", download=False)
    assert not (tmp_path / "data" / "cifar10.npz").exists()


@pytest.mark.parametrize("mode", ["cut", "chunked-cut"])
def test_download_cut_short_keeps_nothing(served, server, tmp_path, mode):
    server.mode = mode
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        load_cifar(served.spec, data_dir=data_dir)
    assert "md5" in str(e.value) or "could not download" in str(e.value)
    assert list(data_dir.iterdir()) == []
    server.mode = "full"
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))


def test_download_interrupted_keeps_nothing(served, server, tmp_path, monkeypatch):
    original = http.client.HTTPResponse.read
    data_dir = tmp_path / "data"
    calls, during = [], []

    def read_then_interrupt(self, amt=None):
        calls.append(amt)
        if len(calls) == 1:
            return original(self, 100)  # part of the file reaches the temporary file...
        during.extend(sorted(p.name for p in data_dir.iterdir()))
        raise KeyboardInterrupt  # ...then Ctrl-C

    monkeypatch.setattr(http.client.HTTPResponse, "read", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_cifar(served.spec, data_dir=data_dir)
    assert len(calls) == 2
    # while it downloads, the bytes go to a temporary file: a killed run never leaves a half archive
    assert len(during) == 1 and during[0].startswith(".download-"), during
    assert list(data_dir.iterdir()) == []
    monkeypatch.undo()
    served.assert_loaded(load_cifar(served.spec, data_dir=data_dir))


# --- the cache -------------------------------------------------------------------------------------------------------


def test_cache_is_reused(fake, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    fake.assert_loaded(load_cifar(fake.spec, data_dir=data_dir, source=fake.archive))

    def fail(*args, **kwargs):
        raise AssertionError("read_archive called although the cache is there")

    monkeypatch.setattr(cifar, "read_archive", fail)
    fake.assert_loaded(load_cifar(fake.spec, data_dir=data_dir, source=fake.archive))
    fake.archive.unlink()
    fake.assert_loaded(load_cifar(fake.spec, data_dir=data_dir, download=False))


def test_archive_in_data_dir(fake, tmp_path):
    """An archive already in data_dir is used without downloading; trusted only if its md5 is the official one."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cifar-10-python.tar.gz").write_bytes(fake.archive.read_bytes())
    wrong_content = {**fake.spec.content_md5, "train_data": "0" * 32}
    # a copy whose file md5 is not the official one: checked like a local archive, so bad content fails
    unofficial = dataclasses.replace(fake.spec, md5="f" * 32, content_md5=wrong_content)
    with pytest.raises(DataError, match="train data has md5"):
        load_cifar(unofficial, data_dir=data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]
    # ... and good content loads (the url is a closed port: no download was tried)
    fake.assert_loaded(load_cifar(dataclasses.replace(fake.spec, md5="f" * 32), data_dir=data_dir))
    (data_dir / "cifar10.npz").unlink()
    # the official md5: trusted, the content checksums are skipped
    fake.assert_loaded(load_cifar(dataclasses.replace(fake.spec, content_md5=wrong_content), data_dir=data_dir))


def _truncated_cache(path, fake):
    load_cifar(fake.spec, data_dir=path.parent, source=fake.archive)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _wrong_shapes_cache(path, fake):
    np.savez(path, train_images=np.zeros((2, 8, 8, 3), np.uint8), train_labels=np.zeros(2, np.int64),
             test_images=np.zeros((1, 8, 8, 3), np.uint8), test_labels=np.zeros(1, np.int64),
             classes=np.array(CLASSES))  # fmt: skip


def _missing_key_cache(path, fake):
    np.savez(path, train_images=np.zeros((2, 32, 32, 3), np.uint8))


@pytest.mark.parametrize("corrupt, warning", [
    (lambda path, fake: path.write_bytes(b"\x00garbage\xff" * 100), "ignoring unreadable cache"),
    (lambda path, fake: path.write_bytes(b""), "ignoring unreadable cache"),
    (_truncated_cache, "ignoring unreadable cache"),
    (_missing_key_cache, "ignoring unreadable cache"),
    (_wrong_shapes_cache, "wrong shapes"),
], ids=["garbage", "empty", "truncated", "missing-key", "wrong-shapes"])  # fmt: skip
def test_corrupted_cache_is_rebuilt(fake, tmp_path, corrupt, warning):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cache = data_dir / "cifar10.npz"
    corrupt(cache, fake)
    with pytest.warns(UserWarning, match=warning) as record:
        data = load_cifar(fake.spec, data_dir=data_dir, source=fake.archive)
    assert str(cache) in str(record[0].message)
    fake.assert_loaded(data)
    fake.assert_loaded(cifar._read_cache(cache, fake.spec))  # rebuilt: a good cache now


# --- atomic writes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_interrupted_cache_write_leaves_nothing(fake, tmp_path, monkeypatch, error):
    data_dir = tmp_path / "data"
    real_savez = np.savez
    calls, during = [], []

    def savez_part_then_fail(file, **arrays):
        calls.append(file)
        file.write(b"PK\x03\x04 half a zip file")  # part of the file is written...
        file.flush()
        during.extend(sorted(p.name for p in data_dir.iterdir()))
        raise error("interrupted while writing the cache")  # ...then the run stops

    monkeypatch.setattr(np, "savez", savez_part_then_fail)
    with pytest.raises(error):
        load_cifar(fake.spec, data_dir=data_dir, source=fake.archive)
    assert calls, "the cache write did not go through np.savez"
    # the half-written bytes are in a temporary file, never in cifar10.npz (a killed run leaves no half cache)
    assert len(during) == 1 and during[0].startswith(".tmp-") and during[0] != "cifar10.npz", during
    assert list(data_dir.iterdir()) == []  # no cifar10.npz, no .tmp-*.npz
    monkeypatch.setattr(np, "savez", real_savez)
    fake.assert_loaded(load_cifar(fake.spec, data_dir=data_dir, source=fake.archive))
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar10.npz"]


# --- where the data lives --------------------------------------------------------------------------------------------


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVIT_DATA", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.setenv("MINIVIT_DATA", "")  # empty: as if unset
    assert default_data_dir() == tmp_path / "xdg" / "minivit"
    monkeypatch.delenv("MINIVIT_DATA")
    assert default_data_dir() == tmp_path / "xdg" / "minivit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "minivit"


def test_load_cifar_uses_minivit_data(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVIT_DATA", str(tmp_path / "env-data"))
    fake.assert_loaded(load_cifar(fake.spec, source=fake.archive))
    assert (tmp_path / "env-data" / "cifar10.npz").is_file()


def test_package_exports():
    assert minivit.data.DataError is cifar.DataError and minivit.data.load_cifar is cifar.load_cifar
    assert minivit.data.DATASETS == {"cifar10": minivit.data.CIFAR10, "cifar100": minivit.data.CIFAR100}
    assert CIFAR10.filename == "cifar-10-python.tar.gz" and minivit.data.CIFAR100.filename == "cifar-100-python.tar.gz"


# --- the real CIFAR-10 -----------------------------------------------------------------------------------------------


def test_real_cifar10(real_cifar10):
    _, data = real_cifar10
    assert data.train_images.shape == (50000, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10000, 32, 32, 3) and data.test_images.dtype == np.uint8
    assert data.train_labels.shape == (50000,) and data.test_labels.shape == (10000,)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert np.bincount(data.train_labels, minlength=10).tolist() == [5000] * 10
    assert np.bincount(data.test_labels, minlength=10).tolist() == [1000] * 10
    assert data.classes == CLASSES
    means = data.train_images.reshape(-1, 3).mean(axis=0, dtype=np.float64) / 255
    np.testing.assert_allclose(means, CIFAR10.mean, atol=1e-3)
    np.testing.assert_allclose(means, (0.4914, 0.4822, 0.4465), atol=1e-3)


def test_real_cifar10_cache(real_cifar10, monkeypatch):
    data_dir, data = real_cifar10
    monkeypatch.setattr(cifar, "read_archive", lambda *a, **k: pytest.fail("the cache was not used"))
    cached = load_cifar("cifar10", data_dir=data_dir, download=False)
    for a, b in zip(cached[:4], data[:4]):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert cached.classes == data.classes


# --- the split of a run: training, validation, test ----------------------------------------------------------------


def _numbered(n_train=20, n_test=6):
    """A Dataset whose every image holds its own index, so a split shows which images went where."""
    train = np.arange(n_train, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    test = np.arange(n_test, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return Dataset(train, np.arange(n_train) % 3, test, np.arange(n_test) % 3, ("a", "b", "c"))


def test_the_validation_images_are_the_last_training_images_and_never_trained_on():
    data = _numbered()
    split = minivit.data.split(data, train_subset=8, val_size=5, test_subset=4)
    assert split.train_images[:, 0, 0, 0].tolist() == list(range(8))
    assert split.val_images[:, 0, 0, 0].tolist() == list(range(15, 20))
    assert split.train_labels.tolist() == data.train_labels[:8].tolist()
    assert split.val_labels.tolist() == data.train_labels[15:].tolist()
    assert split.test_images[:, 0, 0, 0].tolist() == list(range(4)) and split.classes == data.classes
    everything = minivit.data.split(data, val_size=5)  # train_subset 0: every image the validation set leaves
    assert everything.train_images[:, 0, 0, 0].tolist() == list(range(15)) and len(everything.test_images) == 6
    # the same validation images whatever a run trains on; without them, the training set is unchanged
    assert minivit.data.split(data, train_subset=3, val_size=5).val_images[:, 0, 0, 0].tolist() == list(range(15, 20))
    none = minivit.data.split(data, train_subset=8)
    assert len(none.val_images) == 0 and none.train_images[:, 0, 0, 0].tolist() == list(range(8))


@pytest.mark.parametrize("kwargs, message", [
    ({"train_subset": 16, "val_size": 5}, "train_subset 16 is more than the 20 training images there are and the 5 "
                                           r"validation images \(the last ones\) leave 15"),
    ({"train_subset": 21}, "train_subset 21 is more than the 20 training images there are$"),
    ({"val_size": 20}, "val_size 20 leaves none of the 20 training images"),
    ({"val_size": -1}, "val_size must be >= 0, got -1"),
    ({"test_subset": 7}, "test_subset 7 is more than the 6 test images"),
])  # fmt: skip
def test_a_split_that_cannot_be_made_names_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        minivit.data.split(_numbered(), **kwargs)
