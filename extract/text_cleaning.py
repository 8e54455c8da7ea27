"""Text cleaning before tokenisation: the report text a text backbone is given, as a recorded choice.

`TextCleaning.NONE` embeds the manifest's report text as it is. `TextCleaning.MGCA` is the
cleaning the paper's published code applied before embedding (holajoa/Adaptor-VL-SSL,
`dataset/dataset.py`, `MultimodalDataset.create_path_2_sent_mapping`, lines 87-151, a copy of
MGCA's `mgca/datasets/pretrain_dataset.py` lines 77-141), then joined as its `get_caption`
(lines 153-161): split into sentences at every `[0-9]+.` and every `.`; lower-case each
sentence and keep its `\\w+` runs (nltk's `RegexpTokenizer(r"\\w+")`); drop sentences of one
token or none; strip non-ASCII characters from each token, dropping tokens left empty; join the
tokens with spaces and the sentences with spaces. A study left with fewer than 3 tokens was
dropped by the published code; here it is a failed sample with that reason, so the store says why.

The choice is a backbone's (`BackboneSpec.text_cleaning`) and is recorded in its stores'
provenance (`preprocessing.text_cleaning`), so a store is never resumed under another cleaning.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MGCA_MIN_TOKENS = 3
"""`if cnt >= 3` (dataset/dataset.py line 135): studies with fewer tokens left are not embedded."""

_NUMBERED_POINT = re.compile(r"[0-9]+\.")
"""`re.compile("[0-9]+\\.")` (dataset/dataset.py line 102): numbered points split sentences."""
_TOKEN = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.DOTALL)
"""nltk's RegexpTokenizer(r"\\w+").tokenize is `re.findall` with these flags (nltk 3.8.1, as pinned)."""
_REPLACEMENT_PAIR = "\ufffd\ufffd"
"""Two Unicode replacement characters, which the published code turns into a space (line 114)."""


class TextCleaning(str, Enum):
    """What happens to a report's text before the tokenizer sees it."""

    NONE = "none"
    """The manifest's report text as it is."""
    MGCA = "mgca"
    """MGCA's sentence split, `\\w+` tokens, lower case, ASCII only, short sentences and studies dropped."""


@dataclass(frozen=True)
class CleanedText:
    """The text to embed, and why it cannot be embedded ("" when it can)."""

    text: str
    issue: str = ""

    @property
    def usable(self) -> bool:
        """True when the cleaning left enough text to embed."""
        return self.issue == ""


def clean_text(text: str, cleaning: TextCleaning) -> CleanedText:
    """The text after `cleaning`; an issue when the cleaning leaves too little (MGCA: fewer than 3 tokens)."""
    if cleaning is TextCleaning.NONE:
        return CleanedText(text)
    sentences = mgca_sentences(text)
    tokens = sum(len(sentence.split(" ")) for sentence in sentences)
    if tokens < MGCA_MIN_TOKENS:
        return CleanedText("", f"{tokens} token(s) after MGCA's cleaning; the published code dropped studies with "
                               f"fewer than {MGCA_MIN_TOKENS}")
    return CleanedText(" ".join(sentences))


def mgca_sentences(text: str) -> list[str]:
    """MGCA's cleaned sentences of a report text, each its tokens joined by spaces (possibly none)."""
    pieces = _NUMBERED_POINT.split(text.replace("\n", " "))
    sentences = []
    for piece in (sentence for point in pieces for sentence in point.split(".")):
        tokens = _TOKEN.findall(piece.replace(_REPLACEMENT_PAIR, " ").lower())
        if len(tokens) <= 1:
            continue
        ascii_tokens = [ascii_only for ascii_only in (token.encode("ascii", "ignore").decode("ascii")
                                                      for token in tokens) if ascii_only]
        if ascii_tokens:
            sentences.append(" ".join(ascii_tokens))
    return sentences
