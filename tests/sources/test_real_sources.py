"""Real-world sources on small fixtures in their real formats: oasst1, WARC, HTML, Parquet, AlpacaEval.

Fixtures are built by tests/fixtures/real_formats/build.py. Every test checks that the counts reconcile
(read = kept + Σ dropped) and that bad input is an error naming where it is, or a counted skip.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from humpback.params import WebDataParams
from humpback.sources import Counts, SourceError, prepare_eval, prepare_seed, prepare_web, web
from humpback.storage.records import RecordError, read_jsonl
from tests.conftest import FILTERS_ON, eval_data_params, seed_data_params, web_data_params

REAL = Path(__file__).parents[1] / "fixtures" / "real_formats"

SEED = seed_data_params("oasst1", str(REAL / "oasst1.parquet"), heldout=2)
WEB = web_data_params(source="warc", path=str(REAL / "web.warc.gz"), min_chars=100, max_chars=3000, **FILTERS_ON)
EVAL = eval_data_params("alpaca-eval", str(REAL / "alpaca_eval.json"))


def web_records(params: WebDataParams, tmp_path: Path, shard_size: int = 3) -> tuple[list[dict], Counts]:
    out = tmp_path / "out" / "web.jsonl"
    counts = prepare_web(params, out, shard_size, scratch_root=tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists(), "scratch is removed once the output is written"
    metrics = counts.metrics()
    assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())
    return read_jsonl(out), counts


# --------------------------------------------------------------------------------------------- oasst1


def test_oasst1_first_turn_english_rank0(tmp_path):
    train, heldout, counts = prepare_seed(SEED, seed=0)
    pairs = {p["id"]: p for p in train + heldout}
    assert len(pairs) == 12 and len(heldout) == 2
    tiny = [json.loads(line) for line in (REAL.parent / "tiny_profile" / "seed.jsonl").read_text().splitlines()]
    assert pairs["oasst1/m-00-root"] == {
        "id": "oasst1/m-00-root",
        "instruction": tiny[0]["instruction"],
        "output": tiny[0]["output"],
        "source": "oasst1",
    }
    assert pairs["oasst1/m-01-root"]["output"] == tiny[1]["output"]  # rank 0, not the rank-1 reply before it
    assert all("Second-turn" not in p["output"] for p in pairs.values())
    metrics = counts.metrics()
    assert metrics["read"] == 15 and metrics["dropped"] == {"deleted": 1, "language": 1, "no_rank0_answer": 1}
    assert metrics["messages"] == 12 * 4 + 6 + 3 * 2  # 4 per tree, 6 rank-1 replies, 3 dropped trees


def test_oasst1_jsonl_copy_and_any_language(tmp_path):
    table = pq.read_table(REAL / "oasst1.parquet")
    path = tmp_path / "oasst1.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    train, heldout, counts = prepare_seed(replace(SEED, path=str(path), language=""), seed=0)
    assert len(train) + len(heldout) == 13 and counts.dropped == {"deleted": 1, "no_rank0_answer": 1}


def test_oasst1_bad_rows_and_schema(tmp_path):
    path = tmp_path / "oasst1.jsonl"
    good = pq.read_table(REAL / "oasst1.parquet").to_pylist()[:4]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + "{not json\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(RecordError, match=r"oasst1.jsonl:5: not valid JSON"):
        prepare_seed(replace(SEED, path=str(path), heldout=0), seed=0)
    train, _, counts = prepare_seed(replace(SEED, path=str(path), heldout=0, on_bad_record="skip"), seed=0)
    assert len(train) == 1 and counts.dropped == {"malformed": 2} and counts.read == 3
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(SourceError, match=r"other.parquet: not oasst1's message schema: missing column"):
        prepare_seed(replace(SEED, path=str(tmp_path / "other.parquet")), seed=0)


# --------------------------------------------------------------------------------------------- WARC


def test_warc_pages_become_filtered_deduplicated_segments(tmp_path):
    records, counts = web_records(WEB, tmp_path)
    metrics = counts.metrics()
    assert metrics["documents"] == 12 and len(records) == 20
    assert metrics["dropped"] == {
        "duplicate": 2,
        "near_duplicate": 2,
        "navigation_header": 12,
        "not_html": 1,
        "too_short": 12,
    }
    first = records[0]
    assert first["id"] == "warc/https://example.org/guide/0#1" and first["header"] == "Topic 1"
    assert first["doc"] == "https://example.org/guide/0"
    assert all("newsletter" not in r["text"].lower() and "Forum" not in r["text"] for r in records)


def test_truncated_warc_is_an_error_or_a_counted_skip(tmp_path):
    data = (REAL / "web.warc.gz").read_bytes()
    raw = gzip.decompress(data)
    cut = raw.rindex(b"WARC/1.1", 0, raw.index(b"https://example.org/logo.png")) - 200  # inside the last page
    path = tmp_path / "cut.warc"
    path.write_bytes(raw[:cut])
    with pytest.raises(RecordError, match=r"cut.warc: record at byte \d+: truncated WARC record"):
        web_records(replace(WEB, path=str(path)), tmp_path)
    records, counts = web_records(replace(WEB, path=str(path), on_bad_record="skip"), tmp_path)
    assert counts.dropped["truncated"] == 1 and counts.info["documents"] == 11 and len(records) == 20


def test_warc_folder_and_binary_response(tmp_path):
    folder = tmp_path / "crawl"
    folder.mkdir()
    (folder / "a.warc.gz").write_bytes((REAL / "web.warc.gz").read_bytes())
    junk = bytes(range(256)) * 8
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + junk
    header = (
        f"WARC/1.1\r\nWARC-Type: response\r\nWARC-Target-URI: https://junk.example/\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
        f"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http)}\r\n\r\n"
    ).encode()
    (folder / "b.warc").write_bytes(header + http + b"\r\n\r\n")
    with pytest.raises(RecordError, match=r"b.warc: record at byte 0: not HTML text"):
        web_records(replace(WEB, path=str(folder)), tmp_path)
    _, counts = web_records(replace(WEB, path=str(folder), on_bad_record="skip"), tmp_path)
    assert counts.dropped["binary"] == 1


# --------------------------------------------------------------------------------------------- HTML


def test_html_folder_with_broken_markup_and_binary_junk(tmp_path):
    site = tmp_path / "site"
    (site / "docs").mkdir(parents=True)
    text = (REAL.parent / "tiny_profile" / "web.jsonl").read_text().splitlines()
    prose = [json.loads(line)["text"] for line in text]
    (site / "docs" / "a.html").write_text(f"<h2>Fixers</h2><p>{prose[0]}</p><h2>Future</h2><p>{prose[1]}")
    (site / "b.htm").write_text(f"<div><h3>Broken <b>markup</h3><p>{prose[2]}</div></span></td><p>{prose[3]}")
    (site / "c.html").write_bytes(b"\x00\x01\x02\xff\xfe" * 200)
    (site / "notes.txt").write_text("not a page")
    params = replace(WEB, source="html", path=str(site))
    with pytest.raises(RecordError, match=r"c.html: not HTML text"):
        web_records(params, tmp_path)
    records, counts = web_records(replace(params, on_bad_record="skip"), tmp_path)
    assert [r["doc"] for r in records] == ["b.htm", "docs/a.html", "docs/a.html"]
    assert records[0]["header"] == "Broken markup" and prose[3] in records[0]["text"]
    assert counts.dropped == {"binary": 1} and counts.info["documents"] == 2


# --------------------------------------------------------------------------------------------- Parquet


def test_parquet_rows_are_streamed_and_segmented(tmp_path):
    records, counts = web_records(
        replace(WEB, source="parquet", path=str(REAL / "fineweb.parquet"), max_chars=500), tmp_path
    )
    assert counts.info["documents"] == 10 and len(records) == 20 and counts.dropped == {}
    assert records[0]["id"] == "parquet/fineweb.parquet:0#0" and records[0]["header"] == ""


def test_parquet_without_the_text_column_or_with_nulls(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"content": ["a", "b", "c"]}), folder / "a.parquet")
    pq.write_table(pa.table({"text": ["Fine text " * 20, None]}), folder / "b.parquet")
    params = replace(WEB, source="parquet", path=str(folder), language="")
    with pytest.raises(RecordError, match=r"a.parquet: no column 'text' \(data.web.text_field\); columns: content"):
        web_records(params, tmp_path)
    with pytest.raises(RecordError, match=r"b.parquet: row 1: column 'text' must be a string, got NoneType"):
        web_records(replace(params, path=str(folder / "b.parquet")), tmp_path)
    _, counts = web_records(replace(params, on_bad_record="skip", max_repetition=1.0), tmp_path)
    assert counts.dropped == {"malformed": 4} and counts.kept == 1


def test_jsonl_line_that_is_not_json(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(RecordError, match=r"docs.jsonl:2: not valid JSON"):
        web_records(replace(WEB, source="jsonl", path=str(path), min_chars=1), tmp_path)


# --------------------------------------------------------------------------------------------- shards


def test_resume_after_a_crash_gives_the_same_output(tmp_path, monkeypatch):
    params = replace(WEB)
    expected, expected_counts = web_records(params, tmp_path / "whole", shard_size=2)
    calls = {"n": 0}
    real = web.shard_counts

    def crash_on_third(items, params, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(items, params, rows)

    monkeypatch.setattr(web, "shard_counts", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_web(params, tmp_path / "out" / "web.jsonl", 2, scratch_root=tmp_path / "scratch")
    [folder] = (tmp_path / "scratch").iterdir()
    assert sorted(p.name for p in folder.glob("*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert not (tmp_path / "out" / "web.jsonl").exists()
    calls["n"] = -100  # no more crashes; count the shards actually redone
    records, counts = web_records(params, tmp_path, shard_size=2)
    assert calls["n"] == -100 + 5  # 13 records in shards of 2: 7 shards, 2 resumed
    assert records == expected and counts.metrics() == expected_counts.metrics()


# --------------------------------------------------------------------------------------------- AlpacaEval


def test_alpaca_eval_local_json_with_and_without_reference():
    prompts, counts = prepare_eval(EVAL)
    assert len(prompts) == 6 and counts.read == 6
    assert prompts[0] == {
        "id": "alpaca-eval/0",
        "instruction": prompts[0]["instruction"],
        "dataset": "alpaca-eval",
        "category": "helpful_base",
    }
    limited, _ = prepare_eval(replace(EVAL, limit=5))
    assert {p["category"] for p in limited} == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}
    with_ref, _ = prepare_eval(replace(EVAL, reference="text_davinci_003"))
    assert with_ref[0]["reference"].startswith("Reference answer 0")
    assert with_ref[0]["reference_generator"] == "text_davinci_003"
    with pytest.raises(RecordError, match=r"alpaca_eval.json: item 0: reference generator is 'text_davinci_003'"):
        prepare_eval(replace(EVAL, reference="gpt4_turbo"))


def test_alpaca_eval_2_reference_rows_carry_alpaca_evals_generator_name():
    """AlpacaEval 2's reference file names its rows gpt4_1106_preview (not gpt4_turbo): the name its leaderboard
    and length-controlled weights use, which the reference carries on to the judged rows."""
    ae2 = replace(EVAL, path=str(REAL / "alpaca_eval_gpt4_baseline.json"), reference="gpt4_turbo")
    prompts, counts = prepare_eval(ae2)
    assert counts.read == len(prompts) == 6
    assert {p["reference_generator"] for p in prompts} == {"gpt4_1106_preview"}
    assert prompts[2]["reference"] == "GPT-4 Turbo's answer 2."
    with pytest.raises(
        RecordError,
        match=r"reference generator is 'gpt4_1106_preview', but data.eval.reference "
        r"asks for 'text_davinci_003'",
    ):
        prepare_eval(replace(ae2, reference="text_davinci_003"))


def test_alpaca_eval_bad_file(tmp_path):
    path = tmp_path / "ae.json"
    path.write_text('[{"instruction": "Hi"}, {"prompt": "no instruction"}]')
    with pytest.raises(RecordError, match=r"ae.json: item 1: field 'instruction' must be a string"):
        prepare_eval(replace(EVAL, path=str(path)))
    prompts, counts = prepare_eval(replace(EVAL, path=str(path), on_bad_record="skip"))
    assert len(prompts) == 1 and counts.dropped == {"malformed": 1}
    path.write_text('{"instruction": "not a list"')
    with pytest.raises(RecordError, match=r"ae.json:1: not valid JSON"):
        prepare_eval(replace(EVAL, path=str(path)))


def test_hub_paths_fail_with_a_clear_message_offline(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceError, match=r"oasst1: cannot load OpenAssistant/oasst1 .*set data.seed.path"):
        prepare_seed(replace(SEED, path=""), seed=0)
    with pytest.raises(
        SourceError,
        match=r"alpaca-eval: cannot load hf://datasets/tatsu-lab/alpaca_eval/"
        r"alpaca_eval_gpt4_baseline.json",
    ):
        prepare_eval(replace(EVAL, path="", reference="gpt4_turbo"))
