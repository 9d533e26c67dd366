import pytest

from clustermine_lib.corpus import Corpus, clean, load_corpus, load_corpus_file


@pytest.fixture(scope="module")
def na():
    return load_corpus("wordnet-na")


def test_wordnet_counts(na):
    assert len(na) == 79_403  # unique first lemmas of nouns + adjectives (paper: ~79K)
    n = load_corpus("wordnet-n")
    assert len(n) == 67_186  # paper: ~67K
    assert set(n.pos) == {"n"} and set(na.pos) == {"n", "a", "s"}


def test_dedup_rules(na):
    assert len(set(na.names)) == len(na)  # duplicates removed
    assert all(n == n.lower() and "_" not in n for n in na.names)
    assert na.names[:2] == ("entity", "physical entity")  # WordNet file order, deterministic
    # homograph "bank": the synset first in WordNet's file (offset) order keeps the name
    from clustermine_lib.wordnet import wordnet

    banks = [s for s in wordnet().synsets("bank", "n") if s.lemma_names()[0] == "bank"]
    first = min(banks, key=lambda s: s.offset()).name()
    assert na.synsets[na.indices_of(["bank"])[0][0]] == first
    dup1 = load_corpus("wordnet-na", "dup-1-lemma")
    assert len(dup1) == 82_115 + 18_156  # one lemma per noun and adjective synset
    all_lemmas = load_corpus("wordnet-n", "dup-all-lemmas")
    dog = [s for n, s in zip(all_lemmas.names, all_lemmas.synsets) if s == "dog.n.01"]
    assert len(dog) == 3  # dog, domestic dog, Canis familiaris


def test_in21k_and_synset_ids():
    c = load_corpus("wordnet-in21k")
    assert 19_000 < len(c) < 21_843  # ~20K after dedup (paper: 20K)
    assert all(s.count(".") >= 2 for s in c.synsets)


def test_unknown_variant():
    with pytest.raises(ValueError, match="Known corpora"):
        load_corpus("wordnet-xx")
    with pytest.raises(ValueError, match="pre-processing"):
        load_corpus("wordnet-na", "two-lemmas")


def test_user_file(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("word,pos\nGolden_Retriever,n\nred,a\ngolden retriever,n\n")
    c = load_corpus_file(p)
    assert c.names == ("golden retriever", "red") and c.pos == ("n", "a")
    q = tmp_path / "lines.txt"
    q.write_text("cat\n\ndog\ncat\n")
    assert load_corpus_file(q).names == ("cat", "dog")
    assert load_corpus_file(q, dedup=False).names == ("cat", "dog", "cat")


def test_bad_user_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt holds no concepts"):
        load_corpus_file(empty)
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\nCat\ncat\n")
    with pytest.raises(ValueError, match="only 1 distinct"):
        load_corpus_file(dup)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_corpus_file(tmp_path / "nope.txt")


def test_union_adds_missing_gt():
    c = Corpus("x", ("cat", "dog"), ("", ""), ("n", "n"))
    u = c.union(["dog", "tench"])
    assert u.names == ("cat", "dog", "tench") and clean(" Great_White ") == "great white"
