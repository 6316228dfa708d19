"""The toy tokenizer: open_clip's SimpleTokenizer with the shipped word-level merges file."""

from __future__ import annotations

import gzip
import json

from wiseft.toy.model import CONFIG_PATH, toy_tokenizer
from wiseft.toy.tokenizer import BPE_PATH, merges_text, toy_tokenizer_kwargs, vocab_size
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES, all_words


def test_shipped_merges_file_is_up_to_date() -> None:
    assert gzip.decompress(BPE_PATH.read_bytes()).decode("utf-8") == merges_text()


def test_every_word_is_one_token() -> None:
    tokenizer = toy_tokenizer()
    assert {w: len(tokenizer.encode(w)) for w in all_words()} == dict.fromkeys(all_words(), 1)


def test_vocab_matches_model_config_and_eot_is_the_largest_id() -> None:
    tokenizer = toy_tokenizer()
    text_cfg = json.loads(CONFIG_PATH.read_text())["text_cfg"]
    assert tokenizer.vocab_size == vocab_size() == text_cfg["vocab_size"]
    # The text tower pools at argmax(token id): that must be <end_of_text>.
    assert tokenizer.eot_token_id == tokenizer.vocab_size - 1


def test_prompts_fit_the_context_and_round_trip() -> None:
    tokenizer = toy_tokenizer()
    assert tokenizer.context_length == 12
    for template in TEMPLATES:
        for name in CLASSNAMES:
            text = template.format(name)
            ids = tokenizer.encode(text)
            assert len(ids) + 2 <= tokenizer.context_length, text
            assert tokenizer.decode(ids).replace(" .", ".").strip() == text


def test_kwargs_are_absolute_paths() -> None:
    kwargs = toy_tokenizer_kwargs()
    assert set(kwargs) == {"bpe_path"}
    assert BPE_PATH.is_absolute() and kwargs["bpe_path"] == str(BPE_PATH)
