"""One I/O layer for local paths and gs:// URIs (open, read, write, list, exists, rename, delete)."""

from __future__ import annotations

import fnmatch
import glob as _glob
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from typing import BinaryIO, Iterator

_LOG = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
_HASH_BLOCK = 8 << 20  # read 8 MiB at a time when hashing, so huge files never sit in memory
_GCS_READ_CHUNK = 8 << 20  # BlobReader buffer: few round trips for h5py's many small reads


def is_gcs(uri: str) -> bool:
    """True for gs:// URIs; everything else is a local path."""
    return str(uri).startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """Split gs://bucket/name into (bucket, name).

    Raises:
        ValueError: if `uri` is not gs:// or names no bucket.
    """
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    rest = uri[len(GCS_SCHEME):]
    bucket, _, name = rest.partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name


def join(base: str, *parts: str) -> str:
    """Join path parts with '/' for gs:// and os.path.join for local paths."""
    if is_gcs(base):
        out = base.rstrip("/")
        for part in parts:
            out = out + "/" + part.strip("/")
        return out
    return os.path.join(base, *parts)


def basename(uri: str) -> str:
    """Last path component of a local path or gs:// URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1] if is_gcs(uri) else os.path.basename(uri.rstrip(os.sep))


def emulator_host() -> str | None:
    """The GCS emulator endpoint from STORAGE_EMULATOR_HOST, or None when talking to real GCS."""
    host = os.environ.get(EMULATOR_ENV)
    return host or None


_CLIENTS: dict[tuple[int, str | None], object] = {}
_CLIENTS_LOCK = threading.Lock()


def storage_client():
    """A google-cloud-storage client, one per process and emulator setting.

    With STORAGE_EMULATOR_HOST set the client gets anonymous credentials, so it never waits on
    Google authentication (which offline retries for tens of seconds before giving up).
    """
    key = (os.getpid(), emulator_host())
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            from google.cloud import storage

            if key[1]:
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(project="caloforge-emulator", credentials=AnonymousCredentials())
            else:
                client = storage.Client()
            _CLIENTS[key] = client
        return client


def configure_beam_gcs() -> None:
    """Make Beam's own GCS IO use anonymous credentials when an emulator is configured.

    Beam's GcsIO asks google.auth for default credentials and, offline, retries for about 40 s
    before it falls back to an anonymous client. Against an emulator anonymous is what we want, so
    we settle Beam's (process-wide) credential cache up front. Without an emulator this does
    nothing, and real runs authenticate as usual.
    """
    if not emulator_host():
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without the gcp extra: nothing to configure
        return
    with auth._Credentials._credentials_lock:  # pylint: disable=protected-access
        auth._Credentials._credentials = None  # pylint: disable=protected-access
        auth._Credentials._credentials_init = True  # pylint: disable=protected-access


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    if not name:
        raise ValueError(f"gs:// URI names a bucket, not an object: {uri!r}")
    return storage_client().bucket(bucket).blob(name)


def open_read(uri: str) -> BinaryIO:
    """Open a file for reading as a seekable binary file object (h5py can read from it).

    Raises:
        FileNotFoundError: if the file or object does not exist.
    """
    if is_gcs(uri):
        blob = _blob(uri)
        from google.api_core.exceptions import NotFound

        try:
            blob.reload()
        except NotFound as exc:
            raise FileNotFoundError(f"no such object: {uri}") from exc
        return blob.open("rb", chunk_size=_GCS_READ_CHUNK)
    return open(uri, "rb")


def read_bytes(uri: str) -> bytes:
    """Whole content of a file or object."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        try:
            return _blob(uri).download_as_bytes()
        except NotFound as exc:
            raise FileNotFoundError(f"no such object: {uri}") from exc
    with open(uri, "rb") as fh:
        return fh.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file so that readers see either nothing or all of it.

    Local files go to a temporary name in the same folder, then os.replace; a GCS upload of one
    object is already atomic.
    """
    if is_gcs(uri):
        _blob(uri).upload_from_string(data)
        return
    folder = os.path.dirname(os.path.abspath(uri))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(uri) + ".", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get normal modes
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, uri)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def create_exclusive(uri: str, data: bytes) -> None:
    """Create a file with this content only if nothing exists under that name yet.

    The one primitive two processes can use to claim a name: locally the content goes to a
    temporary file that is then hard-linked to `uri` (link fails if the name exists, and readers
    never see a half-written file); where hard links are not supported, O_CREAT | O_EXCL. On GCS
    the upload carries if_generation_match=0, which the service refuses when the object exists.

    Raises:
        FileExistsError: naming `uri`, when it already exists.
    """
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        try:
            _blob(uri).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed as exc:
            raise FileExistsError(f"{uri} already exists") from exc
        return
    folder = os.path.dirname(os.path.abspath(uri))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(uri) + ".", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, uri)
        except FileExistsError:
            raise FileExistsError(f"{uri} already exists") from None
        except OSError:  # no hard links on this filesystem: exclusive create, then write
            with open(uri, "xb") as fh:
                fh.write(data)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def upload_file(local_path: str, uri: str) -> None:
    """Copy a local file to `uri` (gs:// or local)."""
    if is_gcs(uri):
        _blob(uri).upload_from_filename(local_path)
    else:
        makedirs(os.path.dirname(os.path.abspath(uri)))
        shutil.copyfile(local_path, uri)


def download_file(uri: str, local_path: str) -> None:
    """Copy `uri` (gs:// or local) to a local file."""
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    if is_gcs(uri):
        _blob(uri).download_to_filename(local_path)
    else:
        shutil.copyfile(uri, local_path)


def exists(uri: str) -> bool:
    """True if a file/object exists (for gs://, an object with exactly this name)."""
    if is_gcs(uri):
        bucket, name = split_gcs(uri)
        if not name:
            return storage_client().lookup_bucket(bucket) is not None
        return _blob(uri).exists()
    return os.path.exists(uri)


def size(uri: str) -> int:
    """Size in bytes of a file or object."""
    if is_gcs(uri):
        blob = storage_client().bucket(split_gcs(uri)[0]).get_blob(split_gcs(uri)[1])
        if blob is None:
            raise FileNotFoundError(f"no such object: {uri}")
        return int(blob.size)
    return os.path.getsize(uri)


def list_files(prefix: str) -> list[str]:
    """Every file below a folder or gs:// prefix (recursive), sorted.

    A gs:// prefix is treated as a folder: gs://b/out lists gs://b/out/... but not gs://b/out2.
    """
    if is_gcs(prefix):
        bucket, name = split_gcs(prefix)
        folder = name.rstrip("/") + "/" if name else ""
        blobs = storage_client().list_blobs(bucket, prefix=folder)
        return sorted(f"{GCS_SCHEME}{bucket}/{b.name}" for b in blobs)
    if not os.path.isdir(prefix):
        return []
    out = []
    for root, _dirs, files in os.walk(prefix):
        out.extend(os.path.join(root, f) for f in files)
    return sorted(out)


def list_children(prefix: str) -> list[str]:
    """Names directly below a folder or gs:// prefix (files and sub-folders), sorted.

    On GCS a "sub-folder" is the first path component of the objects below the prefix.
    """
    if is_gcs(prefix):
        start = len(prefix.rstrip("/")) + 1
        return sorted({u[start:].split("/", 1)[0] for u in list_files(prefix)})
    if not os.path.isdir(prefix):
        return []
    return sorted(os.listdir(prefix))


def is_empty_dir(prefix: str) -> bool:
    """True when a folder/prefix holds no files at all (or does not exist)."""
    return not list_files(prefix)


def glob(pattern: str) -> list[str]:
    """Expand a wildcard pattern (local or gs://), sorted. A pattern without wildcards is returned
    as is when it exists, so that a missing file gives an empty list the caller can report."""
    if not any(c in pattern for c in "*?["):
        return [pattern] if exists(pattern) else []
    if is_gcs(pattern):
        bucket, name = split_gcs(pattern)
        fixed = name
        for i, c in enumerate(name):
            if c in "*?[":
                fixed = name[:i]
                break
        blobs = storage_client().list_blobs(bucket, prefix=fixed)
        return sorted(f"{GCS_SCHEME}{bucket}/{b.name}" for b in blobs if fnmatch.fnmatchcase(b.name, name))
    return sorted(p for p in _glob.glob(pattern) if os.path.isfile(p))


def makedirs(uri: str) -> None:
    """Create a local folder (gs:// has no folders: nothing to do)."""
    if not is_gcs(uri) and uri:
        os.makedirs(uri, exist_ok=True)


def delete(uri: str) -> None:
    """Delete one file/object; missing is fine."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        try:
            _blob(uri).delete()
        except NotFound:
            pass
    elif os.path.exists(uri):
        os.remove(uri)


def delete_if_unchanged(uri: str, expected: bytes) -> bool:
    """Delete a file only while it still holds `expected`; True if it was deleted.

    For taking over or releasing a lock file: another process may have replaced it since we read
    it, and its file must survive. On GCS the delete carries if_generation_match, so a replacement
    between our read and our delete is refused by the service; locally the window between the
    comparison and the unlink is a few microseconds.
    """
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket, name = split_gcs(uri)
        blob = storage_client().bucket(bucket).get_blob(name)
        if blob is None or blob.download_as_bytes() != expected:
            return False
        try:
            blob.delete(if_generation_match=blob.generation)
        except (NotFound, PreconditionFailed):
            return False
        return True
    try:
        with open(uri, "rb") as fh:
            if fh.read() != expected:
                return False
        os.remove(uri)
    except FileNotFoundError:
        return False
    return True


def delete_tree(prefix: str) -> None:
    """Delete everything below a folder/prefix (the folder itself too, locally)."""
    if is_gcs(prefix):
        for uri in list_files(prefix):
            delete(uri)
    elif os.path.isdir(prefix):
        shutil.rmtree(prefix)


def rename(src: str, dst: str) -> None:
    """Move a file: os.replace locally, copy then delete on GCS (GCS has no rename)."""
    if is_gcs(src) != is_gcs(dst):
        raise ValueError(f"cannot rename across filesystems: {src} -> {dst}")
    if is_gcs(src):
        sbucket, sname = split_gcs(src)
        dbucket, dname = split_gcs(dst)
        client = storage_client()
        source_bucket = client.bucket(sbucket)
        source_bucket.copy_blob(source_bucket.blob(sname), client.bucket(dbucket), dname)
        source_bucket.blob(sname).delete()
        return
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    os.replace(src, dst)


def iter_chunks(uri: str, block: int = _HASH_BLOCK) -> Iterator[bytes]:
    """Stream a file's content in blocks."""
    with open_read(uri) as fh:
        while True:
            data = fh.read(block)
            if not data:
                return
            yield data


def sha256(uri: str) -> str:
    """Hex sha256 of a file's content, streamed."""
    digest = hashlib.sha256()
    for data in iter_chunks(uri):
        digest.update(data)
    return digest.hexdigest()


def unique_suffix() -> str:
    """A short random token for staging names."""
    return uuid.uuid4().hex[:12]
