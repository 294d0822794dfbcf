"""prepare_web, streamed: documents → segments → filters → corpus dedup → sample, in bounded memory.

1. **Shards** (resumable): the reader's documents, cut into shards of `runtime.web_shard_size` in input order.
   Each shard's segments are cleaned (junk, rater-directed text) and go through the per-segment filters
   (`humpback.filters`); the survivors and the shard's counts are written atomically to
   `.humpback/scratch/prepare_web-<fingerprint>/`. Records the reader could not use (damaged, undecodable)
   are counted in their shard; past `data.web.max_bad_fraction` of the documents read, the run stops. A rerun after a
   crash or a kill skips finished shards (it still reads their documents, to know where the next begins).
2. **Dedup**: one pass over the shards in order drops exact and near-duplicates across the whole corpus
   (`humpback.dedup`); one byte per surviving segment records the verdict.
3. **Write** every kept segment (the pool), streamed from the shards into the output file (atomically).
   `sample_web` then draws `data.web.limit` of the pool in a stage of its own.

Memory: one shard of documents, the dedup index (~2 KB per kept segment) and a byte per segment; never
the corpus. The fingerprint covers the params that decide a shard (all of `data.web` but the sample size),
the code that segments and filters, and the input files' paths, sizes and modification times (hashing a
multi-GB crawl would cost as much as segmenting it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

from humpback.dedup import Deduplicator
from humpback.filters import SegmentFilter
from humpback.params import WebDataParams
from humpback.records import atomic_path, iter_jsonl, write_json, write_jsonl
from humpback.segment import html_segments, text_segments
from humpback.sources.counts import Counts, SourceError
from humpback.sources.documents import BadRecord, Document
from humpback.workdirs import SCRATCH_DIR

STAGE = "prepare_web"
# Documents read before max_bad_fraction is checked mid-run (a wrong format fails within the first shards;
# a few damaged records among the first pages of a good crawl do not).
MIN_DOCUMENTS_FOR_FRACTION = 1000
_CODE = [Path(__file__).parents[1] / name for name in ("segment.py", "filters.py", "rater_text.py")] + sorted(
    Path(__file__).parent.glob("*.py")
)


def prepare_web(
    params: WebDataParams,
    read: Callable[[WebDataParams], Iterable[Document | BadRecord]],
    out: str | Path,
    shard_size: int,
    scratch_root: str | Path = SCRATCH_DIR,
    inputs: Iterable[Path] = (),
) -> Counts:
    """Write every kept segment (JSONL, the pool a sample is drawn from) to `out`; return the counts
    (read = kept + Σ dropped)."""
    if shard_size < 1:
        raise ValueError(f"runtime.web_shard_size must be at least 1, got {shard_size}")
    run = WebShards(Path(scratch_root), fingerprint(params, inputs))
    counts = Counts(params.source)
    shards = run.segment(read(params), params, shard_size)
    for shard_counts in shards:
        counts.read += shard_counts["read"]
        for reason, n in shard_counts["dropped"].items():
            counts.drop(reason, n)
        for name, n in shard_counts["info"].items():
            counts.note(name, n)
    check_bad_fraction(params, counts.info.get("documents", 0), sum(s["bad"] for s in shards), counts.dropped,
                       final=True)
    verdicts = run.dedup(len(shards), params.near_duplicate, counts)
    counts.kept = sum(verdicts)
    counts.ensure_any(counts.kept, "segments")
    counts.metrics()  # checks read = kept + Σ dropped before anything is written
    run.write(out, len(shards), verdicts)
    run.clear()
    return counts


def fingerprint(params: WebDataParams, inputs: Iterable[Path]) -> str:
    stats = []
    for root in inputs:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        stats += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    code = hashlib.sha256(b"".join(p.read_bytes() for p in _CODE)).hexdigest()
    # every key but the sample size (sample_web's), read one by one so extraction never reads `limit`
    settings = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "limit"}
    blob = json.dumps({"params": settings, "code": code, "inputs": stats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def shard_counts(items: Iterable[Document | BadRecord], params: WebDataParams, rows: list[dict]) -> dict:
    """Segment and filter one shard's documents into `rows`; its counts as a JSON-ready dict."""
    counts = Counts(params.source)
    keep = SegmentFilter(params)
    bad = 0
    for item in items:
        if isinstance(item, BadRecord):
            counts.read += item.n
            counts.drop(item.reason, item.n)
            bad += item.n if item.bad else 0
            continue
        counts.note("documents")
        if item.replaced:
            counts.note("decoded_with_replacement")
        if item.markup == "html":
            segments = html_segments(item.content, item.doc, item.id_prefix)
        else:
            segments = text_segments(item.content, item.doc, item.id_prefix, params.max_chars)
        for segment in segments:
            counts.read += 1
            segment, reason = keep.clean(segment)
            if reason or (reason := keep.reason(segment)):
                counts.drop(reason)
            else:
                rows.append(segment.record())
    for name, n in (("language_undetermined", keep.undetermined), ("junk_stripped", keep.junk_stripped),
                    ("rater_text_segments", keep.rater_segments), ("rater_text_removed", keep.rater_passages)):
        if n:
            counts.note(name, n)
    return {"read": counts.read, "dropped": counts.dropped, "info": counts.info, "bad": bad}


def check_bad_fraction(params: WebDataParams, documents: int, bad: int, dropped: dict[str, int],
                       final: bool) -> None:
    """Stop when the input is not what `data.web` says (a wrong path or format) rather than a crawl with
    some damage in it: no document read at all, or more than `max_bad_fraction` of them malformed or
    undecodable. Before the end, only once enough documents were read for the share to mean something."""
    total = documents + bad
    if final and documents == 0:
        raise SourceError(
            f"{params.source}: no document could be read from {params.path or 'the default source'} "
            f"({bad} records malformed or undecodable: {dropped}); is data.web.source the right format?"
        )
    if (final or total >= MIN_DOCUMENTS_FOR_FRACTION) and bad > params.max_bad_fraction * total:
        raise SourceError(
            f"{params.source}: {bad} of {total} documents read were malformed or undecodable "
            f"({bad / total:.1%}, over data.web.max_bad_fraction = {params.max_bad_fraction:.1%}; "
            f"dropped: {dropped}); check data.web.path and source, or raise max_bad_fraction"
        )


class WebShards:
    """The scratch folder of one prepare_web run (see the module docstring)."""

    def __init__(self, root: Path, fingerprint: str):
        self.root = root
        self.folder = root / f"{STAGE}-{fingerprint[:16]}"

    def _rows(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.jsonl"

    def _counts(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.counts.json"

    def segment(self, items: Iterable[Document | BadRecord], params: WebDataParams, shard_size: int) -> list[dict]:
        """Phase 1: every shard's counts, doing the shards not yet in scratch."""
        self._drop_stale()
        stream: Iterator = iter(items)
        all_counts: list[dict] = []
        resumed = 0
        with tqdm(desc=f"{STAGE} documents", unit="doc", disable=None, file=sys.stderr) as bar:
            for k in range(sys.maxsize):
                batch = list(islice(stream, shard_size))
                if not batch:
                    break
                if self._rows(k).is_file():  # finished before a crash or kill: keep it
                    all_counts.append(json.loads(self._counts(k).read_text()))
                    resumed += 1
                else:
                    rows: list[dict] = []
                    counts = shard_counts(batch, params, rows)
                    write_json(self._counts(k), counts)  # counts first: the rows file marks the shard done
                    write_jsonl(self._rows(k), rows)
                    all_counts.append(counts)
                documents = sum(c["info"].get("documents", 0) for c in all_counts)
                dropped: dict[str, int] = {}
                for c in all_counts:
                    for reason, n in c["dropped"].items():
                        dropped[reason] = dropped.get(reason, 0) + n
                check_bad_fraction(params, documents, sum(c["bad"] for c in all_counts), dropped, final=False)
                bar.update(len(batch))
        if resumed:
            tqdm.write(f"{STAGE}: resumed, {resumed} of {len(all_counts)} shards were already done "
                       f"in {self.folder}", file=sys.stderr)
        return all_counts

    def _segments(self, n_shards: int) -> Iterator[dict]:
        for k in range(n_shards):
            for _, row in iter_jsonl(self._rows(k)):
                yield row

    def dedup(self, n_shards: int, near_threshold: float, counts: Counts) -> bytearray:
        """Phase 2: a verdict byte (1 = kept) per segment that passed the filters, in corpus order."""
        dedup = Deduplicator(near_threshold)
        verdicts = bytearray()
        for row in self._segments(n_shards):
            reason = dedup.check(row["text"])
            if reason:
                counts.drop(reason)
            verdicts.append(reason is None)
        return verdicts

    def write(self, out: str | Path, n_shards: int, verdicts: bytearray) -> None:
        """Phase 3: the kept segments, in corpus order, to `out`."""
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row, verdict in zip(self._segments(n_shards), verdicts):
                if verdict:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _drop_stale(self) -> None:
        """Scratch of an earlier run with other params, code or input is dead weight."""
        for other in self.root.glob(f"{STAGE}-*"):
            if other != self.folder and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.root.rmdir()  # only when empty: other stages may have scratch of their own
        except OSError:
            pass
