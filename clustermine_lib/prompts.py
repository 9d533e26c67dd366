"""Context prompt sets of appendix D (Fig. 8). A template holds one ``{}`` for the concept name.

- ``basic``: "an image of a {}";
- ``openai-80``: the 80 ImageNet templates of Radford et al. (as shipped by open_clip);
- ``ming-5``: the 5-template subset used by MCM [46] and PLP [1];
- ``nice``: "a nice {}." (NegLabel);
- ``simple-7``: the 7 templates of OpenAI's prompt-engineering notebook (paper default).
"""
from __future__ import annotations

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

SIMPLE_7 = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
# MCM's prompt ensemble (Ming et al., 2022): a subset of the OpenAI templates.
MING_5 = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a black and white photo of a {}.",
    "a photo of the large {}.",
)


def _openai_80() -> tuple[str, ...]:
    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


PROMPT_SETS = {
    "basic": ("an image of a {}.",),
    "openai-80": _openai_80(),
    "ming-5": MING_5,
    "nice": ("a nice {}.",),
    "simple-7": SIMPLE_7,
}
DEFAULT_PROMPTS = "simple-7"


def get_prompts(name: str = DEFAULT_PROMPTS) -> list[str]:
    """Templates of a registered prompt set."""
    if name not in PROMPT_SETS:
        raise ValueError(f"Unknown prompt set {name!r}. Known prompt sets: {sorted(PROMPT_SETS)}.")
    return list(PROMPT_SETS[name])
