import pytest

from clustermine_lib import wordnet


def test_lexnames_file_has_45_fixed_lines():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"


def test_install_from_debian_copy(tmp_path):
    if not (wordnet.DEBIAN_DIR / "data.noun").exists():
        pytest.skip("Debian wordnet-base not installed")
    root = wordnet.install_from_debian(tmp_path / "nltk_data")
    target = root / "corpora" / "wordnet"
    assert (target / "lexnames").read_text() == wordnet.lexnames_text()
    assert (target / "data.noun").stat().st_size == (wordnet.DEBIAN_DIR / "data.noun").stat().st_size


def test_missing_wordnet_says_both_ways(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setenv("CLUSTERMINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError) as e:
        wordnet.ensure_wordnet(debian_dir=tmp_path / "no-debian")
    msg = str(e.value)
    assert "nltk.download('wordnet')" in msg and "wordnet-base" in msg


def test_reader_is_wordnet_30():
    wn = wordnet.wordnet()
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").shortest_path_distance(wn.synset("puppy.n.01")) == 1
