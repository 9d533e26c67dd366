"""Text corpora of candidate concept names (Y_corpus).

Registry (``CORPORA``) of the corpora the paper uses that can be built offline from WordNet 3.0:

- ``wordnet-n``: all WordNet nouns (~67K concepts after pre-processing),
- ``wordnet-na``: nouns + adjectives (79,403 concepts; the paper's default, ~79K),
- ``wordnet-in21k``: the WordNet synsets of ImageNet-21K (timm ships their offsets; ~20K).

Pre-processing (paper Table 6), ``preprocess=``:

- ``dedup-1-lemma`` (default): one lemma (the first) per synset, lower-cased, ``_`` -> space,
  duplicates removed (the first synset in WordNet's file order keeps the name),
- ``dup-1-lemma``: one lemma per synset, duplicates kept,
- ``dup-all-lemmas``: every lemma of every synset, duplicates kept.

The POS-tagging corpora of Table 3 cannot be shipped: load them from a file with ``load_corpus_file``
(UTF-8, a BOM is dropped; a file in another encoding is an error naming the file and line).
Every concept keeps its synset id (``dog.n.01``) when it has one, so WordNet distances can be measured.

A built corpus is cached as ``<cache>/corpora/<corpus>.<preprocess>.v2.tsv``: a header line with
its key (corpus, pre-processing, format), row count and content hash, then one ``name, synset, pos``
row per concept (csv quoting). It is verified when read; a truncated, damaged or stale file is
rebuilt from WordNet (a few seconds), with a warning naming it.
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

CORPORA = {
    "wordnet-n": "WordNet 3.0 nouns",
    "wordnet-na": "WordNet 3.0 nouns + adjectives (paper default)",
    "wordnet-in21k": "WordNet synsets of ImageNet-21K (offsets shipped by timm)",
}
DEFAULT_CORPUS = "wordnet-na"  # the paper's Y_corpus
DEFAULT_PREPROCESS = "dedup-1-lemma"  # the paper's: duplicates removed, one lemma per synset
PREPROCESS = (DEFAULT_PREPROCESS, "dup-1-lemma", "dup-all-lemmas")


@dataclass(frozen=True)
class Corpus:
    """An ordered list of concept names; ``synsets[i]`` is the WordNet id of ``names[i]`` or ''."""

    name: str
    names: tuple[str, ...]
    synsets: tuple[str, ...]
    pos: tuple[str, ...]
    _index: dict = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not (len(self.names) == len(self.synsets) == len(self.pos)):
            raise ValueError("Corpus names, synsets and pos must have the same length.")
        index = {}
        for i, n in enumerate(self.names):
            index.setdefault(n, i)
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return clean(name) in self._index

    def indices_of(self, names) -> tuple[list[int], list[str]]:
        """Indices (first occurrence) of ``names``, matched after ``clean`` (case, underscores);
        also the names not found in the corpus."""
        found, missing = [], []
        for n in names:
            (found.append(self._index[clean(n)]) if clean(n) in self._index else missing.append(n))
        return found, missing

    def subset(self, indices, name: str | None = None) -> "Corpus":
        idx = list(indices)
        return Corpus(name or self.name, tuple(self.names[i] for i in idx),
                      tuple(self.synsets[i] for i in idx), tuple(self.pos[i] for i in idx))

    def union(self, names, name: str | None = None) -> "Corpus":
        """This corpus with the ``names`` it lacks appended (e.g. POS-N ∪ Y_GT, Table 3)."""
        extra = [clean(n) for n in dict.fromkeys(names) if n not in self]
        return Corpus(name or f"{self.name}+gt", self.names + tuple(extra),
                      self.synsets + ("",) * len(extra), self.pos + ("",) * len(extra))


def clean(name: str) -> str:
    """WordNet lemma -> concept name: lower case, underscores to spaces, stripped."""
    return name.replace("_", " ").strip().lower()


def _synset_entries(synsets, preprocess: str):
    for s in synsets:
        lemmas = s.lemma_names() if preprocess == "dup-all-lemmas" else s.lemma_names()[:1]
        for lemma in lemmas:
            yield clean(lemma), s.name(), s.pos()


def _build(entries, name: str, preprocess: str) -> Corpus:
    names, synsets, pos, seen = [], [], [], set()
    for n, s, p in entries:
        if preprocess == "dedup-1-lemma":
            if n in seen:
                continue
            seen.add(n)
        names.append(n), synsets.append(s), pos.append(p)
    return Corpus(name, tuple(names), tuple(synsets), tuple(pos))


def in21k_synsets():
    """ImageNet-21K WordNet synsets, from the wnid list that timm ships."""
    from .wordnet import wordnet

    wn = wordnet()
    return [wn.synset_from_pos_and_offset(w[0], int(w[1:])) for w in _timm_synset_list("imagenet21k_goog_synsets.txt")]


def _timm_synset_list(filename: str) -> list[str]:
    import timm.data

    path = Path(timm.data.__file__).parent / "_info" / filename
    if not path.exists():
        raise FileNotFoundError(f"timm does not ship {path}; upgrade timm (pip install -U timm).")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _wordnet_synsets(corpus: str):
    from .wordnet import wordnet

    wn = wordnet()
    if corpus == "wordnet-n":
        return list(wn.all_synsets("n"))
    if corpus == "wordnet-na":  # nltk's 'a' includes adjective satellites ('s')
        return list(wn.all_synsets("n")) + list(wn.all_synsets("a"))
    return in21k_synsets()


TSV_FORMAT = 2  # bump when the rules of _build / _synset_entries or the file layout change
_TSV_MAGIC = "#clustermine-corpus"


def _cache_path(corpus: str, preprocess: str) -> Path:
    from .wordnet import cache_dir

    return cache_dir() / "corpora" / f"{corpus}.{preprocess}.v{TSV_FORMAT}.tsv"


def _corpus_hash(c: Corpus) -> str:
    from .fileio import content_hash

    return content_hash("\n".join(c.names).encode(), "\n".join(c.synsets).encode(), "\n".join(c.pos).encode())


def _write_tsv(path: Path, c: Corpus, key: dict) -> None:
    from .fileio import atomic_write

    buf = io.StringIO(newline="")
    head = {**key, "n": len(c), "hash": _corpus_hash(c)}
    buf.write(f"{_TSV_MAGIC}\t{json.dumps(head, sort_keys=True)}\n")
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(zip(c.names, c.synsets, c.pos))
    atomic_write(path, buf.getvalue())


def _read_tsv(path: Path, key: dict, name: str) -> Corpus:
    """The corpus in a cached TSV, verified against ``key`` (header), its row count and content hash;
    raises ``ValueError`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    first, _, body = text.partition("\n")
    magic, _, header = first.partition("\t")
    if magic != _TSV_MAGIC:
        raise ValueError("no header line (an older format or not a corpus cache)")
    try:
        head = json.loads(header)
    except ValueError:
        raise ValueError("unreadable header line") from None
    if {k: head.get(k) for k in key} != key:
        raise ValueError(f"made from other inputs ({ {k: head.get(k) for k in key} } instead of {key})")
    try:
        rows = list(csv.reader(io.StringIO(body, newline=""), delimiter="\t"))
    except csv.Error as e:
        raise ValueError(f"unreadable rows ({e})") from None
    bad = next((i for i, r in enumerate(rows) if len(r) != 3), None)
    if bad is not None:
        raise ValueError(f"line {bad + 2} has {len(rows[bad])} fields instead of 3 (cut or damaged)")
    if len(rows) != head.get("n"):
        raise ValueError(f"{len(rows)} concepts where its header says {head.get('n')} (truncated)")
    c = Corpus(name, tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))
    if _corpus_hash(c) != head.get("hash"):
        raise ValueError("its content does not match its hash (damaged)")
    return c


def load_corpus(corpus: str = DEFAULT_CORPUS, preprocess: str = DEFAULT_PREPROCESS, cache: bool = True) -> Corpus:
    """Build (or read from the project cache, verified) a registered corpus; see the module docstring."""
    if corpus not in CORPORA:
        raise ValueError(f"Unknown corpus {corpus!r}. Known corpora: {sorted(CORPORA)}; "
                         "for another corpus use load_corpus_file(path).")
    if preprocess not in PREPROCESS:
        raise ValueError(f"Unknown corpus pre-processing {preprocess!r}. Choose one of {list(PREPROCESS)}.")
    path = _cache_path(corpus, preprocess)
    key = {"corpus": corpus, "preprocess": preprocess, "format": TSV_FORMAT}
    if cache and path.exists():
        try:
            return _read_tsv(path, key, corpus)
        except (OSError, ValueError) as e:
            warnings.warn(f"corpus cache {path}: {e}; rebuilding it from WordNet.", stacklevel=2)
    result = _build(_synset_entries(_wordnet_synsets(corpus), preprocess), corpus, preprocess)
    if cache:
        _write_tsv(path, result, key)
        path.with_name(f"{corpus}.{preprocess}.v1.tsv").unlink(missing_ok=True)  # replaced (unverifiable format)
    return result


def read_text_file(path) -> str:
    """A user text file as ``str``: UTF-8, a BOM dropped; another encoding is a ``ValueError`` naming
    the file, the line and the byte."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError(f"{path} is UTF-16; save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path} line {line} (column {col}) is not UTF-8: byte 0x{raw[e.start]:02x}; save the file "
                         "as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out).") from None


def load_corpus_file(path, name: str | None = None, dedup: bool = True) -> Corpus:
    """A user corpus: one concept per line, or a CSV with columns ``word,pos`` (header optional).

    Names are cleaned like WordNet lemmas; with ``dedup`` the first occurrence of a name wins.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Corpus file {path} does not exist.")
    lines = [l for l in read_text_file(path).splitlines() if l.strip()]
    is_csv = bool(lines) and all("," in l for l in lines[: min(len(lines), 20)])
    rows = list(csv.reader(lines)) if is_csv else [[l] for l in lines]
    if is_csv and rows and [c.strip().lower() for c in rows[0][:2]] == ["word", "pos"]:
        rows = rows[1:]
    entries = [(clean(r[0]), "", (r[1].strip().lower() if len(r) > 1 else "")) for r in rows if clean(r[0])]
    if not entries:
        raise ValueError(f"Corpus file {path} holds no concepts: write one concept per line or `word,pos` rows.")
    result = _build(entries, name or path.stem, "dedup-1-lemma" if dedup else "dup-1-lemma")
    if dedup and len(result) < 2:
        raise ValueError(f"Corpus file {path} holds {len(entries)} lines but only {len(result)} distinct "
                         "concept(s) after removing duplicates; a corpus needs at least 2.")
    return result


def resolve_corpus(corpus, preprocess: str | None = None) -> tuple[Corpus, dict]:
    """``(Corpus, info)`` of ``corpus``: a registered corpus name (built with ``preprocess``, default the
    paper's), the path of a corpus file (``load_corpus_file``: one concept per line or ``word,pos``
    rows), or a ``Corpus``. ``info``: ``kind`` (registered / file / custom), ``name``, ``preprocess``,
    ``sha`` (hash of the file's bytes, or of the names), ``path`` and ``cache_name``, the name of its
    text-feature cache: ``<corpus>-<pre-processing>`` for a registered corpus (what ``make features``
    writes), ``file-<content hash>`` for a file (the same content under another path is the same cache).
    Anything else is a ``ValueError`` naming it and the registered corpora."""
    from .fileio import content_hash

    if isinstance(corpus, Corpus):
        sha = content_hash(list(corpus.names))
        return corpus, {"kind": "custom", "name": corpus.name, "preprocess": None, "sha": sha, "path": None,
                        "cache_name": corpus.name}
    if str(corpus) in CORPORA:
        pre = preprocess or DEFAULT_PREPROCESS
        corp = load_corpus(str(corpus), pre)
        return corp, {"kind": "registered", "name": str(corpus), "preprocess": pre, "path": None,
                      "sha": _corpus_hash(corp), "cache_name": f"{corpus}-{pre}"}
    path = Path(str(corpus)).expanduser()
    if not path.is_file():
        what = "is a folder, not a corpus file" if path.is_dir() else "is neither a registered corpus nor a file"
        raise ValueError(f"--corpus {corpus}: {what}; give one of {sorted(CORPORA)} or the path of a UTF-8 text "
                         "file with one concept per line.")
    sha = content_hash(path.read_bytes())
    corp = load_corpus_file(path)
    return corp, {"kind": "file", "name": corp.name, "preprocess": None, "sha": sha,
                  "path": str(path.resolve()), "cache_name": f"file-{sha[:12]}"}
