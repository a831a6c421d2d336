"""The word-level tokenizer of the `builtin:*-t5-words` encoders: one token per word of the built-in world.

Why: issue #11 measured that a frozen random encoder reading one *byte* at a time gives instructions that differ only
in their background word nearly the same pooled embedding (cosine 0.997), and the model never learned to read them;
the same random 2-layer T5 reading one token per *word* took the background pass rate from 0.12 to 0.97 in the same
text-only run. A word is then one embedding row the UNet can latch onto, and instructions are 4-5× shorter.

Tokenisation, a `tokenizers` pipeline wrapped in `transformers.PreTrainedTokenizerFast` (so it saves with
`save_pretrained` and reloads with `AutoTokenizer`, like any transformers tokenizer):
- lower-cased, accents stripped (NFKD, then StripAccents);
- split at whitespace, and every character other than a-z and 0-9 is a token of its own (punctuation included);
- a word of the vocabulary is one token; any other word is spelled out by WordPiece: its longest known prefix (a word
  or one character), then one `##c` token per remaining character. So every text of letters, digits and ASCII
  punctuation encodes injectively up to case and spacing (a character outside those becomes `<unk>`);
- `</s>` ends every text, as T5's tokenizers do; `<pad>`, `</s>`, `<unk>` are ids 0, 1, 2, as in T5's vocabulary.
- `[ref#1]` … `[ref#16]` have ids of their own (3-18) that the pre-tokenizer never produces: `TextEncoder` makes
  them special tokens, one token each (its `added_tokens` marker mode, which "auto" picks for a tokenizer without
  T5 sentinels), with those ids. (With `max_markers` above 16 the extra markers take ids after the words, which move
  when the vocabulary grows.)

The vocabulary (`world_words.txt`, one token per line, the line number is the id): the special tokens, the markers,
the characters, the `##` characters, then the words. `python -m tasks.vocabulary` rebuilds it from the world's
constants, its templates and the texts its tasks emit; a test checks that the committed file is what that builds.
It only grows: a rebuild keeps every token at its id and appends new words (sorted), and the encoders' embedding
has `EMBEDDING_ROWS` rows from the start, so a checkpoint made with an older file still reads every word it knew
through the same row (a seeded random row, which the checkpoint already holds, waits for each word to come).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

VOCABULARY_FILE = Path(__file__).with_name("world_words.txt")
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)  # T5's ids 0, 1, 2 (T5Config's pad_token_id and eos_token_id)
MARKER_TOKENS = tuple(f"[ref#{n}]" for n in range(1, 17))  # TextEncoder's default max_markers
# Rows of the `-words` encoders' token embedding: room for the vocabulary to grow without changing its shape.
EMBEDDING_ROWS = 1024
WORD_CHARACTERS = string.ascii_lowercase + string.digits
CONTINUATION = "##"  # WordPiece's mark of a token that continues a word
# A character the pre-tokenizer isolates (anything but a-z, 0-9): a token of its own.
SPLIT_PATTERN = "[^a-z0-9]"
# WordPiece turns a longer word into <unk>; no word should, so the limit is out of reach.
MAX_WORD_CHARACTERS = 1_000_000


@cache
def _pipeline():
    """The normalizer and pre-tokenizer: text → the words the vocabulary is made of (and looked up by)."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")]
    )
    return normalizer, pre_tokenizer


def split_words(text: str) -> list[str]:
    """The words (and single-character tokens) the tokenizer reads in `text`, e.g. "A red, big" → [a, red, ",", big]."""
    normalizer, pre_tokenizer = _pipeline()
    return [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]


def vocabulary_tokens(words: Iterable[str], existing: list[str] | None = None) -> list[str]:
    """The full token list, in id order: `existing` (default: specials, markers, characters, `##` characters) and
    then the words it lacks, sorted.

    Raises:
        ValueError: a word the pre-tokenizer would split (it could never be looked up whole), or more tokens than
            `EMBEDDING_ROWS`.
    """
    if existing is None:
        characters = [*WORD_CHARACTERS, *string.punctuation]
        existing = [*SPECIAL_TOKENS, *MARKER_TOKENS, *characters, *(CONTINUATION + c for c in WORD_CHARACTERS)]
    known = set(existing)
    new = set()
    for word in words:
        if split_words(word) != [word]:
            raise ValueError(f"vocabulary word {word!r} is not one word after tokenisation: {split_words(word)}")
        if word not in known:
            new.add(word)
    tokens = [*existing, *sorted(new)]
    if len(tokens) > EMBEDDING_ROWS:
        raise ValueError(f"the vocabulary has {len(tokens)} tokens, more than EMBEDDING_ROWS={EMBEDDING_ROWS}")
    return tokens


def read_vocabulary(path: str | Path = VOCABULARY_FILE) -> list[str]:
    """The tokens of a vocabulary file, in id order."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vocabulary file {path} does not exist; build it with `python -m tasks.vocabulary`")
    tokens = path.read_text(encoding="utf-8").splitlines()
    head = (*SPECIAL_TOKENS, *MARKER_TOKENS)
    if tuple(tokens[: len(head)]) != head or len(set(tokens)) != len(tokens) or len(tokens) > EMBEDDING_ROWS:
        raise ValueError(
            f"{path}: not a vocabulary file (it must start with {SPECIAL_TOKENS} and the markers, repeat no token and "
            f"hold at most {EMBEDDING_ROWS})"
        )
    return tokens


def word_tokenizer(path: str | Path = VOCABULARY_FILE) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of a vocabulary file (the built-in world's, by default)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    tokens = read_vocabulary(path)
    model = models.WordPiece(
        {token: i for i, token in enumerate(tokens)},
        unk_token=UNK,
        continuing_subword_prefix=CONTINUATION,
        max_input_chars_per_word=MAX_WORD_CHARACTERS,
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer, tokenizer.pre_tokenizer = _pipeline()
    eos = (EOS, tokens.index(EOS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[eos]
    )
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK)
