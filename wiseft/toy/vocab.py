"""Names and words of the toy world: class names, zero-shot templates and caption vocabulary.

Everything a caption or a prompt can contain is listed here, so that the tokenizer (``wiseft.toy.tokenizer``) can
make every word a single token and so that a change of wording changes the generator version.
"""

from __future__ import annotations

#: The ten shape classes. Sorted alphabetically, so ``CLASSNAMES[i]`` is label ``i`` of an ImageFolder over the
#: class folders (ImageFolder sorts folder names), and folder names are exactly these strings.
CLASSNAMES: tuple[str, ...] = (
    "arrow",
    "circle",
    "cross",
    "diamond",
    "heart",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)

#: Zero-shot prompt templates (``str.format`` with the class name), averaged into one embedding per class
#: exactly as CLIP's prompt ensembling does.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of a small {}.",
    "a sketch of a {}.",
    "a drawing of a {}.",
    "a cartoon {}.",
    "a rendition of a {}.",
    "a {} in a cluttered scene.",
)

#: Colour names used in captions, with the hue (0..1 on the HSV wheel) they are drawn around; ``None`` hue means
#: an achromatic colour drawn by value instead.
COLOURS: dict[str, float | None] = {
    "red": 0.0,
    "orange": 0.08,
    "yellow": 0.15,
    "green": 0.33,
    "teal": 0.47,
    "blue": 0.62,
    "purple": 0.76,
    "pink": 0.9,
    "white": None,
    "black": None,
    "gray": None,
}

#: Fill patterns that captions may name.
PATTERNS: tuple[str, ...] = ("striped", "dotted", "checkered")

#: Other words that captions use (style phrases, adjectives, function words).
CAPTION_WORDS: tuple[str, ...] = (
    "a",
    "of",
    "in",
    "with",
    "photo",
    "picture",
    "close",
    "up",
    "big",
    "small",
    "blurry",
    "cluttered",
    "scene",
    "sketch",
    "pencil",
    "drawing",
    "doodle",
    "cartoon",
    "clipart",
    "rendition",
)


def all_words() -> list[str]:
    """Every word that captions and prompts of the toy world use, sorted and unique.

    Returns:
        The words, lower case.
    """
    words = set(CLASSNAMES) | set(COLOURS) | set(PATTERNS) | set(CAPTION_WORDS)
    for template in TEMPLATES:
        words.update(w.strip(".,") for w in template.replace("{}", "").split())
    words.discard("")
    return sorted(words)
