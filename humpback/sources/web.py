"""prepare_web, streamed: documents → segments → filters → corpus dedup → sample, in bounded memory.

1. **Shards** (resumable): the reader's documents, cut into shards of `runtime.web_shard_size` in input order.
   Each shard's segments are cleaned (junk, rater-directed text) and go through the per-segment filters
   (`humpback.sources.filters`); the shard runner (`humpback.storage.shards`) writes the survivors and the shard's
   counts atomically to `.humpback/scratch/prepare_web-<fingerprint>/`. Records the reader could not use (damaged,
   undecodable) are counted in their shard; past `data.web.max_bad_fraction` of the documents read, the run
   stops. A rerun after a crash or a kill skips finished shards (it still reads their documents, to know where
   the next begins).
2. **Dedup**: one pass over the shards in order drops exact and near-duplicates across the whole corpus
   (`humpback.sources.dedup`); one byte per surviving segment records the verdict.
3. **Write** every kept segment (the pool), streamed from the shards into the output file (atomically).
   `sample_web` then draws `data.web.limit` of the pool in a stage of its own.

Memory: one shard of documents, the dedup index (a few KB per kept segment: docs/data.md) and a byte per segment; never
the corpus. The fingerprint covers the params that decide a shard (all of `data.web` but the sample size),
the code that segments and filters, and the input files' paths, sizes and modification times (hashing a
multi-GB crawl would cost as much as segmenting it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

from humpback.params import WebDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.sources.documents import BadRecord, Document
from humpback.sources.filters import SegmentFilter, language_identifier
from humpback.sources.segment import html_segments, text_segments
from humpback.storage.hashing import hash_files, hash_json
from humpback.storage.records import atomic_path
from humpback.storage.shards import ShardedRun
from humpback.storage.workdirs import SCRATCH_DIR

STAGE = "prepare_web"
# Documents read before max_bad_fraction is checked mid-run (a wrong format fails within the first shards;
# a few damaged records among the first pages of a good crawl do not).
MIN_DOCUMENTS_FOR_FRACTION = 1000
_CODE = sorted(Path(__file__).parent.glob("*.py"))  # the readers, segmentation, filters, rater-directed text


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
    if params.language:
        language_identifier()  # its load's transient peak, before a shard of documents is held (filters.py)
    run = ShardedRun(STAGE, web_shards_key(params, inputs), scratch_root)

    def work(batch: list[Document | BadRecord]) -> tuple[list[dict], dict]:
        rows: list[dict] = []
        return rows, shard_counts(batch, params, rows)

    def check(so_far: list[dict]) -> None:
        dropped: dict[str, int] = {}
        for c in so_far:
            for reason, n in c["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
        check_bad_fraction(
            params,
            sum(c["info"].get("documents", 0) for c in so_far),
            sum(c["bad"] for c in so_far),
            dropped,
            final=False,
        )

    shards = run.stream(read(params), shard_size, work, desc=f"{STAGE} documents", unit="doc", check=check)
    counts = Counts(params.source)
    for shard in shards:
        counts.read += shard["read"]
        for reason, n in shard["dropped"].items():
            counts.drop(reason, n)
        for name, n in shard["info"].items():
            counts.note(name, n)
    check_bad_fraction(
        params, counts.info.get("documents", 0), sum(s["bad"] for s in shards), counts.dropped, final=True
    )
    verdicts = dedup(run.rows(len(shards)), params.near_duplicate, counts)
    counts.kept = sum(verdicts)
    counts.ensure_any(counts.kept, "segments")
    counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_kept(out, run.lines(len(shards)), verdicts)
    run.clear()
    return counts


def web_shards_key(params: WebDataParams, inputs: Iterable[Path]) -> str:
    """Identifies prepare_web's shards: the params that decide a shard, the code that segments and filters, and
    the input files by path, size and mtime (hashing a multi-GB crawl would cost as much as segmenting it)."""
    stats = []
    for root in inputs:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        stats += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    # every key but the sample size (sample_web's), read one by one so extraction never reads `limit`
    settings = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "limit"}
    return hash_json({"params": settings, "code": hash_files(_CODE), "inputs": stats})


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
            if reason or (reason := keep.text_reason(segment.text)):
                counts.drop(reason)
            else:
                rows.append(segment.record())
    for name, n in (
        ("language_undetermined", keep.undetermined),
        ("junk_stripped", keep.junk_stripped),
        ("rater_text_segments", keep.rater_segments),
        ("rater_text_removed", keep.rater_passages),
    ):
        if n:
            counts.note(name, n)
    return {"read": counts.read, "dropped": counts.dropped, "info": counts.info, "bad": bad}


def check_bad_fraction(params: WebDataParams, documents: int, bad: int, dropped: dict[str, int], final: bool) -> None:
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


def dedup(segments: Iterable[dict], near_threshold: float, counts: Counts) -> bytearray:
    """Phase 2: a verdict byte (1 = kept) per segment that passed the filters, in corpus order."""
    # imported here: datasketch (with scipy) takes half a second, and every stage imports this package through
    # the stage runner (SourceError), not only prepare_web
    from humpback.sources.dedup import Deduplicator

    deduplicator = Deduplicator(near_threshold)
    verdicts = bytearray()
    for row in segments:
        reason = deduplicator.check(row["text"])
        if reason:
            counts.drop(reason)
        verdicts.append(reason is None)
    return verdicts


def write_kept(out: str | Path, lines: Iterable[str], verdicts: bytearray) -> None:
    """Phase 3: the kept segments, in corpus order, to `out`: their scratch lines copied as they are (the
    shards are written in the same JSONL format)."""
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line, verdict in zip(lines, verdicts):
            if verdict:
                f.write(line)
