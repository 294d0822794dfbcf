"""Source `project-faqs`: the FAQ pages of other Python projects' Debian documentation packages.

Human-written questions about Python with human-written answers, from a source the pipeline never reads for
training (the seed is the Python FAQ, the web text the rest of python3.11-doc): the held-out set of the
other-source likelihood instrument (`humpback.evaluation.likelihood`), and an eval source (`data.eval.source`).

The set is fixed: the packages and their versions are pinned below (the Makefile installs exactly these),
and a pair is a FAQ entry whose heading is a question ("...?") with an answer of at least
MIN_ANSWER_CHARS characters. Everything else is counted as dropped. Entries are leaf sections, parsed
as the Python FAQ is (`python_faq.faq_pairs`); the FAQ conventions "Q: " (coverage.py) and "**Answer:**"
(Celery) are removed, as a reader does not read them as part of the question or the answer, and SQLAlchemy's
module shorthand is rendered as its docs render it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humpback.params import EvalDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.sources.python_faq import faq_pairs

NAME = "project-faqs"
DEFAULT_ROOT = "/"  # the packages' own paths; a copied tree keeps the same layout under data.*.path
# Shorter bodies are pointers ("See :ref:`model_persistence`."), not answers.
MIN_ANSWER_CHARS = 100

_QUESTION_PREFIX = re.compile(r"^Q:\s*")
_ANSWER_PREFIX = re.compile(r"^(\*\*Answer:?\*\*:?|Answer:)\s*")
# SQLAlchemy's docs name objects by a module shorthand (`_schema.Table`) that their Sphinx extension
# (zzzeeksphinx) renders as the bare name.
_MODULE_SHORTHAND = re.compile(r"`_[a-z]+\.")


@dataclass(frozen=True)
class FaqPackage:
    package: str  # Debian package (bookworm)
    version: str  # the pinned version: another version may have other questions
    pattern: str  # glob of its FAQ sources, relative to the root


# Chosen for: a FAQ written as question headings with answers (the seed's own format), Sphinx sources
# shipped in the package (so the Python FAQ's RST reader applies), a small install.
PACKAGES = (
    FaqPackage("python-celery-doc", "5.2.6-5", "usr/share/doc/python-celery-doc/html/_sources/faq.rst.txt"),
    FaqPackage("mypy-doc", "1.0.1-1", "usr/share/doc/mypy/html/_sources/faq.rst.txt"),
    FaqPackage("python-coverage-doc", "6.5.0+dfsg1-2", "usr/share/doc/python-coverage-doc/html/_sources/faq.rst.txt"),
    FaqPackage("python-pygments-doc", "2.14.0+dfsg-1", "usr/share/doc/python-pygments-doc/html/_sources/faq.rst.txt"),
    FaqPackage("python-sqlalchemy-doc", "1.4.46+ds1-1", "usr/share/doc/python-sqlalchemy-doc/rst/faq/*.rst"),
)
INSTALL_HINT = "apt-get install " + " ".join(f"{p.package}={p.version}" for p in PACKAGES)


def read_pairs(path: str, counts: Counts) -> list[dict[str, Any]]:
    """Every kept (question, answer) pair, in package then file then document order.

    `path` "" reads the installed packages and checks their versions; another root is a copy of their
    files in the same layout (tests, machines without dpkg) and is taken as it is."""
    root = Path(path or DEFAULT_ROOT)
    if not path:
        check_versions()
    pairs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for pkg in PACKAGES:
        for file in faq_files(root, pkg):
            name = file.name.split(".")[0]
            for pair in faq_pairs(file.read_text(encoding="utf-8"), name):
                counts.read += 1
                question = _QUESTION_PREFIX.sub("", pair["instruction"]).strip()
                answer = _MODULE_SHORTHAND.sub("`", _ANSWER_PREFIX.sub("", pair["output"])).strip()
                if not question.endswith("?"):
                    counts.drop("not_a_question")
                elif len(answer) < MIN_ANSWER_CHARS:
                    counts.drop("short_answer")
                elif question in seen:
                    counts.drop("duplicate_question")
                else:
                    seen.add(question)
                    pairs.append(
                        {
                            "id": f"{NAME}/{pkg.package}/{pair['id'].removeprefix('python-faq/')}",
                            "instruction": question,
                            "output": answer,
                            "source": NAME,
                            "category": pkg.package,
                        }
                    )
    return pairs


def read_eval(params: EvalDataParams, counts: Counts) -> list[dict[str, Any]]:
    """The questions as evaluation prompts, `category` = the package (a `limit` takes from each in turn)."""
    return [
        {"id": p["id"], "instruction": p["instruction"], "dataset": NAME, "category": p["category"]}
        for p in read_pairs(params.path, counts)
    ]


def faq_files(root: Path, pkg: FaqPackage) -> list[Path]:
    files = sorted(p for p in root.glob(pkg.pattern) if p.is_file() and p.name != "index.rst")
    if not files:
        raise SourceError(
            f"{NAME}: no {root / pkg.pattern} ({pkg.package} not installed?); run `{INSTALL_HINT}` "
            "or point the path at a folder holding the same files"
        )
    return files


def check_versions(query=None) -> None:
    """Fail unless every package is installed at its pinned version: a different FAQ is a different set."""
    query = query or installed_version
    wrong = [(p, query(p.package)) for p in PACKAGES]
    wrong = [(p, v) for p, v in wrong if v != p.version]
    if wrong:
        found = ", ".join(f"{p.package} {v or 'not installed'} (pinned {p.version})" for p, v in wrong)
        raise SourceError(f"{NAME}: {found}; run `{INSTALL_HINT}`")


def installed_version(package: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], check=False, capture_output=True, text=True
        )
    except FileNotFoundError:  # not a Debian system: the packages cannot be installed here at all
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
