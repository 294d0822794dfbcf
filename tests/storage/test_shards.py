"""Resumable shards: finished shards are skipped on a rerun, the result equals an uninterrupted run, and the
fingerprint changes with anything that changes the work. `map` serves augment and score, `stream`
prepare_web (its resume through the stage: tests/sources/test_real_sources.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from humpback.engines.models import model_identity
from humpback.storage.hashing import hash_file
from humpback.storage.shards import ShardedRun, model_shards_key

RECORDS = [{"id": f"r{i}", "text": f"text {i}"} for i in range(10)]


def upper(shard: list[dict]) -> list[dict]:
    return [{"id": r["id"], "out": r["text"].upper()} for r in shard]


def test_map_writes_shards_and_returns_rows_in_order(tmp_path):
    run = ShardedRun("stage", "f" * 64, root=tmp_path)
    rows = run.map(RECORDS, 4, upper)
    assert rows == upper(RECORDS)
    assert sorted(p.name for p in run.folder.iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    run.clear()
    assert not run.folder.exists()


def test_rerun_skips_finished_shards(tmp_path):
    class Crash(Exception):
        pass

    calls: list[list[str]] = []

    def crash_on_third(shard):
        calls.append([r["id"] for r in shard])
        if len(calls) == 3:
            raise Crash
        return upper(shard)

    run = ShardedRun("stage", "a" * 64, root=tmp_path)
    with pytest.raises(Crash):
        run.map(RECORDS, 3, crash_on_third)
    assert sorted(p.name for p in run.folder.iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]

    calls.clear()

    def record(shard):
        calls.append([r["id"] for r in shard])
        return upper(shard)

    rows = ShardedRun("stage", "a" * 64, root=tmp_path).map(RECORDS, 3, record)
    assert calls == [["r6", "r7", "r8"], ["r9"]]  # only the missing shards ran
    assert rows == upper(RECORDS)


def test_other_fingerprints_of_the_stage_are_dropped(tmp_path):
    ShardedRun("curate-1", "a" * 64, root=tmp_path).map(RECORDS, 5, upper)
    ShardedRun("curate-2", "b" * 64, root=tmp_path).map(RECORDS, 5, upper)
    new = ShardedRun("curate-1", "c" * 64, root=tmp_path)
    new.map(RECORDS, 5, upper)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curate-1-" + "c" * 16, "curate-2-" + "b" * 16]


def count_upper(shard: list[dict]) -> tuple[list[dict], dict]:
    return upper(shard), {"read": len(shard)}


def test_stream_reads_lazily_keeps_rows_in_scratch_and_resumes_with_the_saved_counts(tmp_path):
    class Crash(Exception):
        pass

    read: list[str] = []

    def lazily():
        for r in RECORDS:
            read.append(r["id"])
            yield r

    seen: list[int] = []

    def check(so_far: list[dict]) -> None:
        seen.append(sum(c["read"] for c in so_far))
        if len(so_far) == 2 and len(seen) == 2:
            raise Crash  # the first run stops after its second shard, as bad input would stop it

    run = ShardedRun("prepare_web", "d" * 64, root=tmp_path)
    with pytest.raises(Crash):
        run.stream(lazily(), 4, count_upper, check=check)
    assert read == [f"r{i}" for i in range(8)]  # one shard read at a time, never the whole input
    assert sorted(p.name for p in run.folder.iterdir()) == [
        "shard-00000.counts.json",
        "shard-00000.jsonl",
        "shard-00001.counts.json",
        "shard-00001.jsonl",
    ]

    calls: list[list[str]] = []

    def record(shard):
        calls.append([r["id"] for r in shard])
        return count_upper(shard)

    counts = run.stream(lazily(), 4, record, check=check)
    assert calls == [["r8", "r9"]]  # only the missing shard ran; the others' counts came from scratch
    assert counts == [{"read": 4}, {"read": 4}, {"read": 2}] and seen[-3:] == [4, 8, 10]
    assert list(run.rows(len(counts))) == upper(RECORDS)


def test_bad_shard_size(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        ShardedRun("s", "0" * 64, root=tmp_path).map(RECORDS, 0, upper)


def test_hash_file_is_cached_by_stat_and_follows_content(tmp_path):
    f, cache = tmp_path / "w.bin", tmp_path / "cache"
    f.write_bytes(b"abc")
    os.utime(f, (1e9, 1e9))  # old enough to be remembered (content_hash.RACY_SECONDS)
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert hash_file(f, cache) == abc == hash_file(f)
    assert len(list(cache.iterdir())) == 1  # one entry per file identity
    f.write_bytes(b"abd")
    assert hash_file(f, cache) != abc


def test_fingerprint_follows_stage_params_model_and_input(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the hash cache lives in ./.humpback
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "1"}\n')
    base = model_shards_key("augment", {"seed": 0}, model_identity(model), [data])
    assert base == model_shards_key("augment", {"seed": 0}, model_identity(model), [data])
    assert base != model_shards_key("curate-1", {"seed": 0}, model_identity(model), [data])
    assert base != model_shards_key("augment", {"seed": 1}, model_identity(model), [data])
    data.write_text('{"id": "2"}\n')
    changed_input = model_shards_key("augment", {"seed": 0}, model_identity(model), [data])
    assert changed_input != base
    weights = next(model.glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # same size, different weights
    weights.write_bytes(bytes(blob))
    assert model_shards_key("augment", {"seed": 0}, model_identity(model), [data]) != changed_input
