"""Derive ``src/filterscope/zoo/imagenet_hierarchy.tsv``: the WordNet ancestors of the 1,000 ImageNet classes.

The exemplar consensus (:mod:`filterscope.trust.describe`) counts an independent network's predicted classes up
the WordNet noun hierarchy ("dog (31 of 50), mostly terriers"). The table it reads is derived once, here, and
shipped; WordNet itself is never a run-time dependency. Sources (WordNet 3.0: ImageNet's ``nNNNNNNNN`` ids are its
noun offsets):

- the class ids in index order: timm's ``timm/data/_info/imagenet_synsets.txt`` (``pip download timm --no-deps``
  and unzip; the order is the sorted ids, the standard class index);
- the hierarchy: Debian's ``wordnet-base`` (``/usr/share/wordnet/data.noun``), each synset's first hypernym
  (``@``, or ``@i`` for instances) up to ``entity``.

Output, one line per synset on some class's path: ``wnid<TAB>parent wnid (empty at the root)<TAB>name``, the
classes first in index order, then the ancestors sorted. Run: ``python tools/imagenet_hierarchy.py SYNSETS
[DATA_NOUN] > src/filterscope/zoo/imagenet_hierarchy.tsv``.
"""

from __future__ import annotations

import sys


def read_nouns(path: str) -> dict[str, tuple[str, str]]:
    """``{wnid: (first lemma, first hypernym wnid or "")}`` from WordNet's ``data.noun``."""
    nouns = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):
                continue  # the licence header
            fields = line.split(" | ")[0].split()
            offset, count = fields[0], int(fields[3], 16)
            lemma = fields[4].replace("_", " ")
            pointers_at = 4 + 2 * count
            parent = ""
            for i in range(pointers_at + 1, len(fields) - 3, 4):
                if fields[i] in ("@", "@i") and fields[i + 2] == "n":
                    parent = "n" + fields[i + 1]
                    break
            nouns["n" + offset] = (lemma, parent)
    return nouns


def main(synsets: str, data_noun: str = "/usr/share/wordnet/data.noun") -> None:
    nouns = read_nouns(data_noun)
    with open(synsets, encoding="utf-8") as handle:
        classes = [line.strip() for line in handle if line.strip()]
    assert len(classes) == 1000, len(classes)
    ancestors: set[str] = set()
    for wnid in classes:
        parent = nouns[wnid][1]
        while parent:
            ancestors.add(parent)
            parent = nouns[parent][1]
    for wnid in classes + sorted(ancestors - set(classes)):
        name, parent = nouns[wnid]
        print(f"{wnid}\t{parent}\t{name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
