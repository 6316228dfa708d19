"""A miniature WiSE-FT world: procedural shape domains with distribution shifts and a tiny pretrained open_clip CLIP.

Public entry points:

* :func:`wiseft.toy.world.ensure_world`: the cached on-disk world (ImageFolder trees and a captioned web corpus).
* :data:`CLASSNAMES`, :data:`TEMPLATES`: class names (sorted, ImageFolder label order) and zero-shot prompts.
* :func:`toy_tokenizer_kwargs`: tokenizer kwargs for ``open_clip.get_tokenizer("toy-clip", ...)``.
* ``python -m wiseft.toy.pretrain``: contrastive pretraining of the shipped weights.
"""

from wiseft.toy.tokenizer import toy_tokenizer_kwargs
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES
from wiseft.toy.world import LABELLED_DOMAINS, SHIFT_DOMAINS, ensure_world

#: Tokenizer kwargs for the toy model (absolute path of the shipped merges file).
TOKENIZER_KWARGS = toy_tokenizer_kwargs()

__all__ = [
    "CLASSNAMES",
    "LABELLED_DOMAINS",
    "SHIFT_DOMAINS",
    "TEMPLATES",
    "TOKENIZER_KWARGS",
    "ensure_world",
    "toy_tokenizer_kwargs",
]
