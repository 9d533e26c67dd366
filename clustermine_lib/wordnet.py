"""WordNet 3.0 offline, through nltk.

Order of preference (see `ensure_wordnet`):
1. an nltk ``wordnet`` corpus already installed in one of nltk's data roots (users with internet ran
   ``nltk.download("wordnet")``);
2. Debian's ``wordnet-base`` + ``wordnet-sense-index`` files in ``/usr/share/wordnet``: nltk refuses
   readers outside its data roots, so the files are copied once into ``<cache>/nltk_data/corpora/wordnet``
   (a data root we add to ``nltk.data.path``) together with the ``lexnames`` file those packages lack;
3. otherwise a clear error that says both ways to get it.
"""
from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

from .fileio import atomic_write

DEBIAN_DIR = Path("/usr/share/wordnet")
# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)); fixed by the WordNet release.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location
noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation
verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather
adj.ppl""".split()
_POS_OF = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
NEEDED = ["data.noun", "index.noun", "data.adj", "index.adj", "data.verb", "index.verb", "data.adv",
          "index.adv", "noun.exc", "adj.exc", "verb.exc", "adv.exc", "index.sense"]

MISSING_MESSAGE = (
    "WordNet 3.0 was not found. Get it one of two ways:\n"
    "  (a) with internet: python -c \"import nltk; nltk.download('wordnet')\"\n"
    "  (b) offline on Debian/Ubuntu: apt-get install --no-install-recommends wordnet-base "
    "wordnet-sense-index  (then `make install` or `python -m clustermine_lib.wordnet` copies it "
    "into the project cache)\n"
    "Searched: nltk data roots {roots} and {debian}."
)


def cache_dir() -> Path:
    """Project cache root: $CLUSTERMINE_CACHE, else <repo>/.cache (the repo holding this package)."""
    env = os.environ.get("CLUSTERMINE_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache"


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_POS_OF[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def install_from_debian(root: Path | None = None, source: Path = DEBIAN_DIR) -> Path:
    """Copy Debian's WordNet files into ``<root>/corpora/wordnet`` atomically (a folder built beside it,
    then renamed into place: no reader sees half a copy); return the data root."""
    root = Path(root) if root else cache_dir() / "nltk_data"
    target = root / "corpora" / "wordnet"
    if (target / "lexnames").exists():
        return root
    missing = [f for f in NEEDED if not (source / f).exists()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {missing}; install wordnet-base and wordnet-sense-index.")
    made = []

    def fill(tmp: Path) -> None:  # a private folder, renamed into place whole by atomic_write
        made.append(tmp)
        tmp.mkdir()
        for f in NEEDED:
            shutil.copyfile(source / f, tmp / f)
        (tmp / "lexnames").write_text(lexnames_text())

    try:
        atomic_write(target, fill)
    except OSError:
        for tmp in made:
            shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "lexnames").exists():
            raise
        # else another process won the race: its copy is complete
    return root


def _nltk_has_wordnet() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
            return True
        except LookupError:
            return False


def ensure_wordnet(debian_dir: Path = DEBIAN_DIR) -> str:
    """Make WordNet importable through ``nltk.corpus.wordnet``; return where it came from."""
    import nltk

    own_root = str(cache_dir() / "nltk_data")
    if own_root not in nltk.data.path:
        nltk.data.path.append(own_root)
    if _nltk_has_wordnet():
        return "nltk"
    if (Path(debian_dir) / "data.noun").exists():
        install_from_debian(Path(own_root), Path(debian_dir))
        return "debian"
    raise FileNotFoundError(MISSING_MESSAGE.format(roots=list(nltk.data.path), debian=debian_dir))


@lru_cache(maxsize=1)
def wordnet():
    """The nltk WordNet reader (loaded once per process)."""
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # nltk maps WordNet versions for the multilingual OMW data on every start (~10 s);
            # we read English WordNet 3.0 only.
            return None

    ensure_wordnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        return _Reader(nltk.data.find("corpora/wordnet"), None)


if __name__ == "__main__":
    print("WordNet from:", ensure_wordnet(), "| version", wordnet().get_version())
