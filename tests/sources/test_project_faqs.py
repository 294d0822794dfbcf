"""The other-source set (project-faqs): the importer on real FAQ files, its pins, and its disjointness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from humpback.params import EvalDataParams, OtherDataParams
from humpback.sources import Counts, SourceError, prepare_eval, prepare_other, project_faqs
from humpback.sources.overlap import normalize, seen_in_training
from humpback.sources.python_faq import DEFAULT_ROOT, faq_pairs
from humpback.sources.rst import rst_to_text

# Excerpts of the five pinned packages' FAQ files, in their installed layout (heads of the real files).
FIXTURE = Path(__file__).parents[1] / "fixtures" / "project_faqs"
OTHER = OtherDataParams(source="project-faqs", path=str(FIXTURE))
INSTALLED = all(any(Path("/").glob(p.pattern)) for p in project_faqs.PACKAGES)
CELERY = "project-faqs/python-celery-doc/faq#"


def fixture_pairs() -> tuple[list[dict], Counts]:
    counts = Counts("project-faqs")
    pairs = project_faqs.read_pairs(str(FIXTURE), counts)
    counts.kept = len(pairs)
    return pairs, counts


def test_importer_keeps_question_entries_with_real_answers():
    pairs, counts = fixture_pairs()
    # Celery's excerpt: 5 questions kept; "celery" and "kombu" (sub-headings of a question about
    # dependencies, which has children and so is no entry) are not questions; "Is Celery for Django only?"
    # answers in 72 characters, a pointer. SQLAlchemy: 2 headings are statements, not questions.
    assert counts.metrics() == {
        "source": "project-faqs",
        "read": 21,
        "kept": 16,
        "dropped": {"not_a_question": 4, "short_answer": 1},
    }
    by_package = {}
    for p in pairs:
        by_package[p["category"]] = by_package.get(p["category"], 0) + 1
    assert by_package == {
        "python-celery-doc": 5,
        "mypy-doc": 3,
        "python-coverage-doc": 2,
        "python-pygments-doc": 2,
        "python-sqlalchemy-doc": 4,
    }
    ids = [p["id"] for p in pairs]
    assert len(set(ids)) == len(ids) and f"{CELERY}is-celery-heavy-weight" in ids
    assert f"{CELERY}is-celery-for-django-only" not in ids
    assert all(p["instruction"].endswith("?") and len(p["output"]) >= project_faqs.MIN_ANSWER_CHARS for p in pairs)


def test_importer_removes_faq_conventions_not_content():
    pairs = {p["id"]: p for p in fixture_pairs()[0]}
    pickle = pairs[f"{CELERY}is-celery-dependent-on-pickle"]["output"]
    assert pickle.startswith("No, Celery can support any serialization scheme.")  # was "**Answer:** No, ..."
    coverage = [p for p in pairs.values() if p["category"] == "python-coverage-doc"]
    assert coverage[0]["instruction"] == "Why do unexecutable lines show up as executed?"  # was "Q: Why ..."
    sort = next(p for p in pairs.values() if p["instruction"].startswith("How can I sort Table"))
    assert "`MetaData.sorted_tables`" in sort["output"]  # :attr:`_schema.MetaData.sorted_tables`
    assert not any("``" in p["output"].replace("```", "") or ":class:" in p["output"] for p in pairs.values())


def test_installed_packages_must_be_the_pinned_versions():
    installed = {p.package: p.version for p in project_faqs.PACKAGES}
    project_faqs.check_versions(installed.get)  # all pinned: no error
    installed["python-celery-doc"] = "5.3.0-1"
    with pytest.raises(SourceError, match=r"python-celery-doc 5\.3\.0-1 \(pinned 5\.2\.6-5\).*apt-get install"):
        project_faqs.check_versions(installed.get)
    with pytest.raises(SourceError, match="mypy-doc not installed"):
        project_faqs.check_versions(lambda package: None if package == "mypy-doc" else installed[package])


def test_missing_files_name_the_package_and_the_install_command(tmp_path):
    with pytest.raises(SourceError, match=r"python-celery-doc not installed.*apt-get install python-celery-doc="):
        project_faqs.read_pairs(str(tmp_path), Counts("project-faqs"))


def test_eval_source_gives_the_questions_as_prompts():
    params = EvalDataParams(
        source="project-faqs",
        path=str(FIXTURE),
        instruction_field="instruction",
        reference="none",
        limit=5,
        on_bad_record="error",
    )
    prompts, counts = prepare_eval(params)
    assert len(prompts) == 5 and len({p["category"] for p in prompts}) == 5  # round-robin over packages
    assert set(prompts[0]) == {"id", "instruction", "dataset", "category"}
    assert counts.metrics()["dropped"] == {"not_a_question": 4, "over_limit": 11, "short_answer": 1}


# ------------------------------------------------------------------------------------------ disjointness


def test_normalize_ignores_case_markup_punctuation_and_spacing():
    assert normalize("Is  Celery *heavy-weight*?") == normalize("is celery heavy weight") == "is celery heavy weight"
    assert normalize("Ｃｅｌｅｒｙ\u00a0`pickle`") == "celery pickle"  # NFKC: full-width letters, no-break space


def test_seen_in_training_catches_exact_and_reformatted_copies():
    pairs, _ = fixture_pairs()
    heavy = next(p for p in pairs if p["id"].endswith("is-celery-heavy-weight"))
    pickle = next(p for p in pairs if p["id"].endswith("is-celery-dependent-on-pickle"))
    amqp = next(p for p in pairs if p["id"].endswith("do-i-have-to-use-amqp-rabbitmq"))
    mypy = next(p for p in pairs if p["category"] == "mypy-doc")
    instructions = ["How do I copy a file?", heavy["instruction"]]  # an exact copy
    texts = [
        "Some page.\n\n**IS CELERY DEPENDENT ON PICKLE** -- asked often.",  # the question, reformatted
        "Intro. " + amqp["output"][:200].upper() + " ...",  # the answer's start, reformatted
        "is celery heavy",  # a fragment of a question is not the question
    ]
    seen = seen_in_training(pairs, instructions, texts)
    assert seen == {
        heavy["id"]: "question_is_a_training_instruction",
        pickle["id"]: "question_in_training_text",
        amqp["id"]: "answer_in_training_text",
    }
    assert mypy["id"] not in seen
    # Matches are whole words: the question inside a longer word is not a copy.
    assert seen_in_training([heavy], [], ["is celery heavy weighted"]) == {}


def test_prepare_other_drops_and_counts_what_training_contains():
    pairs, _ = fixture_pairs()
    planted = pairs[3]
    training = [
        {"id": "s1", "instruction": planted["instruction"].lower(), "output": "x", "source": "jsonl"},
        {"id": "w1", "text": "unrelated web text", "header": "", "doc": "d"},
    ]
    kept, counts = prepare_other(OTHER, training)
    assert planted["id"] not in {p["id"] for p in kept} and len(kept) == len(pairs) - 1
    assert counts.metrics()["dropped"]["question_is_a_training_instruction"] == 1
    assert counts.metrics()["read"] == 21


def test_prepare_other_stage_writes_pairs_and_counts(tmp_path):
    import yaml

    from stages import prepare_other as stage

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["data"]["other"]["path"] = str(FIXTURE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"id": "s", "instruction": "What is Python?", "output": "A language."}) + "\n")
    stage.main(
        [
            "--training",
            str(seed),
            "--out",
            str(tmp_path / "other.jsonl"),
            "--metrics",
            str(tmp_path / "m.json"),
            "--params",
            str(tmp_path / "params.yaml"),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "other.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and set(rows[0]) == {"id", "instruction", "output", "source", "category"}
    assert json.loads((tmp_path / "m.json").read_text())["kept"] == 16


@pytest.mark.skipif(
    not (INSTALLED and Path(DEFAULT_ROOT).is_dir()),
    reason="needs python3.11-doc and the project-faqs packages (make setup installs them)",
)
def test_real_set_is_disjoint_from_the_whole_python_docs():
    """The installed set against every page the seed and web sources can draw from: every FAQ pair of
    python3.11-doc and every reStructuredText source of its pages (a superset of any web sample)."""
    counts = Counts("project-faqs")
    pairs = project_faqs.read_pairs("", counts)
    assert 70 <= len(pairs) <= 150
    sources = sorted((Path(DEFAULT_ROOT) / "_sources").rglob("*.rst.txt"))
    seed = [p for f in sources if f.parent.name == "faq" for p in faq_pairs(f.read_text(encoding="utf-8"), f.name)]
    assert len(seed) > 150
    texts = [rst_to_text(f.read_text(encoding="utf-8").splitlines()) for f in sources]
    texts += [p["output"] for p in seed]
    assert seen_in_training(pairs, [p["instruction"] for p in seed], texts) == {}
    # And the check can see a copy in this corpus: one planted FAQ question is found.
    probe = [{"id": "probe", "instruction": seed[0]["instruction"].upper(), "output": "x"}]
    assert seen_in_training(probe, [], texts) == {"probe": "question_in_training_text"}


def test_makefile_installs_exactly_the_pinned_packages():
    import re

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = re.search(r"^FAQ_PKGS := (.*?)(?<!\\)$", makefile, re.MULTILINE | re.DOTALL).group(1)
    pins = set(listed.replace("\\\n", " ").split())
    assert pins == {f"{p.package}={p.version}" for p in project_faqs.PACKAGES}
