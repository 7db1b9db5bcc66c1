"""What a conversion may do to its output folder: claim it, clean up after dead runs, publish.

The rule is that caloforge deletes only what caloforge wrote. An output folder may hold:
  * a previous conversion: manifest.json and the shards it lists (replaced only with --overwrite),
  * our lock file (`_caloforge.lock`) and staging folders (`_staging-<12 hex digits>`),
  * temporary files of our atomic writes (`.manifest.json.*.tmp`, `._caloforge.lock.*.tmp`),
  * the files a dead run named in its lock while it was publishing.
Anything else is someone else's: the conversion refuses to start (listing a few of them), with
or without --overwrite. An output that is, or contains, one of the inputs is refused always.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from data_prep import manifest as manifest_lib
from data_prep import output_lock
from data_prep import uri as uri_lib
from data_prep.output_lock import LOCK_NAME, OutputLock

_LOG = logging.getLogger(__name__)

STAGING_PREFIX = "_staging-"
_STAGING_NAME = re.compile(r"_staging-[0-9a-f]{12}")
_OUR_TEMP_NAME = re.compile(r"\.(manifest\.json|_caloforge\.lock)\..+\.tmp")
_SHOWN = 5  # unknown files named in a refusal


def _normal_local(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def refuse_output_over_inputs(output: str, inputs: Sequence[str]) -> None:
    """Refuse an output that is one of the inputs or a folder holding one of them.

    Writing there mixes the dataset with its sources, and replacing the dataset later could
    remove them.

    Raises:
        ValueError: naming the output and the input.
    """
    for source in inputs:
        if uri_lib.is_gcs(output) != uri_lib.is_gcs(source):
            continue
        if uri_lib.is_gcs(output):
            out, src = output.rstrip("/"), source.rstrip("/")
            inside = src.startswith(out + "/")
        else:
            out, src = _normal_local(output), _normal_local(source)
            inside = src != out and os.path.commonpath([out, src]) == out
        if src == out or inside:
            relation = "is" if src == out else "contains"
            raise ValueError(
                f"output {output} {relation} the input {source}: a dataset must not be written where "
                f"its inputs live (replacing it later could delete them); choose an --output outside "
                f"the inputs' folders"
            )


def _relative(output: str, uri: str) -> str:
    if uri_lib.is_gcs(output):
        return uri[len(output.rstrip("/")) + 1:]
    return os.path.relpath(uri, output)


def _plain_name(name: str) -> bool:
    """A file name directly in the output (what our shards and manifest are), nothing else."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


@dataclass
class Contents:
    """The output folder sorted by owner (names relative to the output).

    Attributes:
        dataset: The previous conversion's files present: manifest.json and its listed shards.
        leftovers: Our staging folders and temporary files.
        unknown: Everything else: not ours, never deleted.
    """

    dataset: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def survey(output: str, lock: OutputLock | None = None) -> Contents:
    """Sort the output's files into the previous dataset, our leftovers and unknown files.

    Files named in `lock.publishing` (a run that died while publishing) count as ours.
    """
    contents = Contents()
    listed: set[str] = set()
    manifest_error = None
    if uri_lib.exists(manifest_lib.manifest_path(output)):
        try:
            listed = {manifest_lib.MANIFEST_NAME} | {
                s["name"] for s in manifest_lib.load_manifest(output).shards}
        except (ValueError, KeyError, TypeError) as exc:
            manifest_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    publishing = set(lock.publishing) if lock else set()
    for uri in uri_lib.list_files(output):
        name = _relative(output, uri)
        top = name.split("/", 1)[0].split(os.sep, 1)[0]
        if name == LOCK_NAME:
            continue
        if _STAGING_NAME.fullmatch(top) or _OUR_TEMP_NAME.fullmatch(name):
            if top not in contents.leftovers:
                contents.leftovers.append(top)
        elif name in listed:
            contents.dataset.append(name)
        elif name in publishing and _plain_name(name):
            contents.leftovers.append(name)
        elif name == manifest_lib.MANIFEST_NAME and manifest_error:
            contents.unknown.append(f"{name} (unreadable: {manifest_error})")
        else:
            contents.unknown.append(name)
    for name in uri_lib.list_children(output):  # empty local staging folders hold no files
        if _STAGING_NAME.fullmatch(name) and name not in contents.leftovers:
            contents.leftovers.append(name)
    return contents


def refuse_unknown(output: str, contents: Contents) -> None:
    """Raises FileExistsError listing a few files caloforge did not write, if there are any."""
    if not contents.unknown:
        return
    n = len(contents.unknown)
    shown = ", ".join(contents.unknown[:_SHOWN]) + (f" and {n - _SHOWN} more" if n > _SHOWN else "")
    raise FileExistsError(
        f"output {output} holds {n} file{'s' if n > 1 else ''} that no caloforge conversion wrote: {shown}; "
        f"caloforge only ever deletes its own files (not even --overwrite removes these): choose an "
        f"empty or new --output, or move those files away"
    )


def _delete_entry(output: str, name: str) -> None:
    target = uri_lib.join(output, name)
    if _STAGING_NAME.fullmatch(name):
        uri_lib.delete_tree(target)
    else:
        uri_lib.delete(target)


def clean_after_dead_run(output: str, lock: OutputLock, raw: bytes | None, why: str) -> None:
    """Remove what a dead run left: its staging folder, and the files it was publishing that no
    manifest lists (a manifest present then is complete: it was written last). Then its lock."""
    removed = []
    if _STAGING_NAME.fullmatch(lock.staging):
        uri_lib.delete_tree(uri_lib.join(output, lock.staging))
        removed.append(lock.staging)
    keep = set(survey(output).dataset)
    for name in lock.publishing:
        if _plain_name(name) and name not in keep and name != LOCK_NAME:
            uri_lib.delete(uri_lib.join(output, name))
            removed.append(name)
    if raw is not None:
        uri_lib.delete_if_unchanged(output_lock.lock_uri(output), raw)
    _LOG.warning("output %s: cleaned up after a conversion that no longer runs (%s; %s): removed %s",
                 output, lock.describe(), why, ", ".join(removed) or "nothing but its lock")


class OutputClaim:
    """One run's hold on its output folder, from the checks to the published dataset.

    Entering: refuse unknown files; refuse a live run's lock (naming it) or clean up after a dead
    one; take the lock; remove our own orphaned staging folders; refuse a previous dataset
    unless overwrite. Leaving: remove the staging folder, then the lock.
    """

    def __init__(self, output: str, overwrite: bool, stale_after_s: float):
        self.output = output
        self.overwrite = overwrite
        self.stale_after_s = stale_after_s
        self.staging_name = STAGING_PREFIX + uri_lib.unique_suffix()
        self.staging = uri_lib.join(output, self.staging_name)
        self.lock: OutputLock | None = None
        self.previous: list[str] = []
        # A local folder we create only to fail in is removed again (when still empty).
        self._made_folder = not uri_lib.is_gcs(output) and not os.path.exists(output)

    def __enter__(self) -> "OutputClaim":
        if not uri_lib.is_gcs(self.output) and os.path.exists(self.output) and not os.path.isdir(self.output):
            raise FileExistsError(f"output {self.output} is a file, not a folder; choose a folder for --output")
        existing, raw = output_lock.read_lock(self.output)
        refuse_unknown(self.output, survey(self.output, existing))
        if raw is not None:
            self._take_over(existing, raw)
        lock = OutputLock.for_this_process(self.staging_name)
        output_lock.acquire(self.output, lock)
        self.lock = lock
        try:
            contents = survey(self.output)
            refuse_unknown(self.output, contents)
            for name in contents.leftovers:
                _LOG.warning("output %s: removing %s, left by an earlier conversion", self.output, name)
                _delete_entry(self.output, name)
            if contents.dataset and not self.overwrite:
                n_shards = len([n for n in contents.dataset if n != manifest_lib.MANIFEST_NAME])
                raise FileExistsError(
                    f"output {self.output} already holds a dataset ({manifest_lib.MANIFEST_NAME} and "
                    f"{n_shards} shards); pass --overwrite to replace it"
                )
            self.previous = contents.dataset
            uri_lib.makedirs(self.staging)
        except BaseException:
            self._release()
            self._remove_made_folder()
            raise
        return self

    def _take_over(self, existing: OutputLock | None, raw: bytes) -> None:
        if existing is None:
            if not self.overwrite:
                raise FileExistsError(
                    f"output {self.output} has a lock file {LOCK_NAME} that cannot be read; if no "
                    f"conversion is writing there, pass --overwrite (or delete that file)"
                )
            uri_lib.delete_if_unchanged(output_lock.lock_uri(self.output), raw)
            return
        why = output_lock.stale_reason(existing, self.stale_after_s, self.overwrite)
        if why is None:
            raise FileExistsError(
                f"output {self.output} is being written by another conversion ({existing.describe()}); "
                f"wait for it to finish, or choose another --output"
            )
        clean_after_dead_run(self.output, existing, raw, why)

    def _release(self) -> None:
        if self.lock is not None:
            output_lock.release(self.output, self.lock)
            self.lock = None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            uri_lib.delete_tree(self.staging)
        finally:
            self._release()
            if exc_type is not None:
                self._remove_made_folder()

    def _remove_made_folder(self) -> None:
        if self._made_folder:
            try:
                os.rmdir(self.output)
            except OSError:  # not empty (or gone): leave it
                pass

    def publish(self, shard_names: Sequence[str], write_manifest: Callable[[], str]) -> str:
        """Replace the previous dataset (if any) by the staged shards; the manifest goes last.

        Before touching anything the lock lists every file about to be deleted or created, so a
        run killed half-way leaves nothing the next run cannot recognise as its own. The old
        manifest goes first: from then on no half-replaced dataset looks complete.

        Returns:
            The URI of the new manifest (what write_manifest returned).
        """
        current, _ = output_lock.read_lock(self.output)
        if self.lock is None or current is None or current.token != self.lock.token:
            who = current.describe() if current else "nobody"
            raise RuntimeError(f"output {self.output}: our lock was taken over (now held by {who}); not publishing")
        self.lock.publishing = sorted(set(self.previous) | set(shard_names) | {manifest_lib.MANIFEST_NAME})
        output_lock.rewrite(self.output, self.lock)
        if manifest_lib.MANIFEST_NAME in self.previous:
            uri_lib.delete(manifest_lib.manifest_path(self.output))
        for name in self.previous:
            if name != manifest_lib.MANIFEST_NAME:
                uri_lib.delete(uri_lib.join(self.output, name))
        for name in shard_names:
            uri_lib.rename(uri_lib.join(self.staging, name), uri_lib.join(self.output, name))
        return write_manifest()
