"""Identities of the synthetic benchmark: what a person looks like, independent of any image.

An :class:`Identity` fixes build, skin, hair or hat, top (colour, sleeves, pattern), lower
garment (type, colour), shoes and bag.  :func:`make_identities` draws the identities of one
split and makes a fraction of them *outfit twins*: same top and lower garment (colours,
types, pattern) and build as another identity, different head, shoes or bag, so that only
part-level cues tell them apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

RGB = tuple[int, int, int]

# Clothing colours (name, sRGB).  Names go to identities.jsonl as attribute labels.
CLOTHING_COLOURS: dict[str, RGB] = {
    "black": (28, 28, 32),
    "white": (228, 228, 222),
    "grey": (128, 128, 132),
    "dark grey": (70, 72, 76),
    "navy": (30, 40, 90),
    "blue": (40, 90, 190),
    "light blue": (130, 170, 220),
    "denim": (60, 90, 135),
    "red": (185, 30, 35),
    "maroon": (110, 25, 40),
    "green": (40, 130, 60),
    "olive": (95, 100, 45),
    "khaki": (185, 165, 115),
    "beige": (215, 200, 165),
    "brown": (110, 70, 40),
    "yellow": (230, 195, 40),
    "orange": (230, 120, 30),
    "pink": (230, 140, 170),
    "purple": (110, 55, 140),
    "teal": (30, 130, 130),
}
COLOUR_NAMES: tuple[str, ...] = tuple(CLOTHING_COLOURS)
DARK_COLOURS = ("black", "dark grey", "navy", "denim", "maroon", "brown", "olive", "grey")
BRIGHT_COLOURS = ("white", "red", "yellow", "orange", "pink", "light blue", "green", "blue", "teal", "purple", "beige")
LOWER_COLOURS = ("black", "dark grey", "navy", "denim", "blue", "khaki", "beige", "grey", "brown", "white", "olive", "light blue")

SKIN_TONES: tuple[RGB, ...] = (
    (245, 215, 190), (235, 195, 160), (220, 175, 135), (195, 145, 105),
    (165, 115, 80), (130, 85, 55), (95, 62, 40), (240, 200, 175),
)
HAIR_COLOURS: dict[str, RGB] = {
    "black": (22, 20, 20), "dark brown": (55, 35, 25), "brown": (100, 65, 35),
    "blond": (205, 170, 100), "red": (140, 60, 30), "grey": (160, 160, 160),
}
HAIR_STYLES = ("short", "long", "ponytail", "bald", "bob")
HATS = ("none", "cap", "beanie")
SLEEVES = ("short", "long", "none")
PATTERNS = ("solid", "stripes", "checks", "logo")
LOWERS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder", "handbag")

#: Per-domain clothing statistics ("season"): sleeve, lower garment and colour biases.
SEASONS: dict[str, dict] = {
    "summer": {"sleeves": (0.65, 0.1, 0.25), "lower": (0.45, 0.35, 0.2), "bright": 0.7, "hat": (0.8, 0.18, 0.02)},
    "mild": {"sleeves": (0.45, 0.45, 0.1), "lower": (0.65, 0.15, 0.2), "bright": 0.5, "hat": (0.85, 0.1, 0.05)},
    "winter": {"sleeves": (0.05, 0.95, 0.0), "lower": (0.85, 0.0, 0.15), "bright": 0.3, "hat": (0.65, 0.05, 0.3)},
}


@dataclass(frozen=True)
class Identity:
    """Appearance of one synthetic person (colours are sRGB 0..255)."""

    key: int                 # local identity index inside its domain (seeds its images)
    pid: int                 # identity number in file names (0 for distractors)
    height: float            # relative stature, ~0.9..1.06
    girth: float             # relative body width, ~0.85..1.25
    skin: RGB
    hair_style: str
    hair_colour: str
    hat: str
    hat_colour: str
    top_colour: str
    top_colour2: str         # pattern / logo colour
    sleeves: str
    pattern: str
    lower: str
    lower_colour: str
    shoe_colour: str
    bag: str
    bag_colour: str
    twin_of: int = -1        # pid of the identity whose outfit this one copies (-1 = none)

    def rgb(self, name: str) -> RGB:
        """sRGB of a colour attribute (``top``, ``top2``, ``lower``, ``shoe``, ``bag``, ``hat``, ``hair``)."""
        if name == "hair":
            return HAIR_COLOURS[self.hair_colour]
        attr = {"top": self.top_colour, "top2": self.top_colour2, "lower": self.lower_colour,
                "shoe": self.shoe_colour, "bag": self.bag_colour, "hat": self.hat_colour}[name]
        return CLOTHING_COLOURS[attr]

    def outfit(self) -> tuple:
        """What outfit twins share: top and lower garment (colours, types, pattern)."""
        return (self.top_colour, self.top_colour2, self.sleeves, self.pattern, self.lower, self.lower_colour)

    def distinguishing(self) -> tuple:
        """What tells outfit twins apart: head (hair, hat, skin), shoes, bag."""
        return (self.hair_style, self.hair_colour, self.hat, self.hat_colour, self.skin, self.shoe_colour, self.bag, self.bag_colour)

    def to_json(self) -> dict:
        d = asdict(self)
        d["skin"] = list(self.skin)
        return d


def _choice(rng: np.random.Generator, items, p=None):
    if p is not None:
        p = np.asarray(p, dtype=float)
        p = p / p.sum()
    return items[int(rng.choice(len(items), p=p))]


def _colour(rng: np.random.Generator, season: dict, exclude: tuple[str, ...] = ()) -> str:
    pool = BRIGHT_COLOURS if rng.random() < season["bright"] else DARK_COLOURS
    pool = tuple(c for c in pool if c not in exclude) or tuple(c for c in COLOUR_NAMES if c not in exclude)
    return _choice(rng, pool)


def _head(rng: np.random.Generator, season: dict) -> dict:
    style = _choice(rng, HAIR_STYLES, p=(0.4, 0.22, 0.12, 0.08, 0.18))
    return {
        "skin": SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        "hair_style": style,
        "hair_colour": _choice(rng, tuple(HAIR_COLOURS), p=(0.45, 0.22, 0.13, 0.1, 0.04, 0.06)),
        "hat": _choice(rng, HATS, p=season["hat"]),
        "hat_colour": _colour(rng, season),
    }


def _feet_and_bag(rng: np.random.Generator, season: dict) -> dict:
    return {
        "shoe_colour": _choice(rng, ("black", "white", "brown", "grey", "navy", "red", "beige", "blue"),
                               p=(0.3, 0.25, 0.12, 0.1, 0.08, 0.05, 0.05, 0.05)),
        "bag": _choice(rng, BAGS, p=(0.5, 0.22, 0.16, 0.12)),
        "bag_colour": _colour(rng, season),
    }


def random_identity(rng: np.random.Generator, key: int, pid: int, season: str = "mild") -> Identity:
    """Draw one identity from the clothing statistics of ``season``."""
    s = SEASONS[season]
    top = _colour(rng, s)
    lower = _choice(rng, LOWERS, p=s["lower"])
    lower_colour = _choice(rng, LOWER_COLOURS) if lower != "skirt" else _colour(rng, s)
    return Identity(
        key=key,
        pid=pid,
        height=float(rng.uniform(0.9, 1.06)),
        girth=float(np.clip(rng.normal(1.0, 0.1), 0.82, 1.3)),
        top_colour=top,
        top_colour2=_colour(rng, s, exclude=(top,)),
        sleeves=_choice(rng, SLEEVES, p=s["sleeves"]),
        pattern=_choice(rng, PATTERNS, p=(0.55, 0.17, 0.13, 0.15)),
        lower=lower,
        lower_colour=lower_colour,
        **_head(rng, s),
        **_feet_and_bag(rng, s),
    )


def make_twin(base: Identity, rng: np.random.Generator, key: int, pid: int, season: str = "mild") -> Identity:
    """A new identity wearing ``base``'s outfit with a different head, shoes or bag.

    At least two of the three (head, shoes, bag) differ visibly from ``base``, so the
    pair is separable by part-level cues only.
    """
    s = SEASONS[season]
    for _ in range(100):
        head = _head(rng, s)
        feet = _feet_and_bag(rng, s)
        head_differs = (head["hair_style"], head["hair_colour"], head["hat"]) != (base.hair_style, base.hair_colour, base.hat)
        shoes_differ = feet["shoe_colour"] != base.shoe_colour
        bag_differs = (feet["bag"], feet["bag_colour"] if feet["bag"] != "none" else "") != (
            base.bag, base.bag_colour if base.bag != "none" else "")
        if head_differs + shoes_differ + bag_differs >= 2:
            break
    return replace(base, key=key, pid=pid, twin_of=base.pid, **head, **feet)


def identity_rng(seed: int, domain: int, key: int) -> np.random.Generator:
    """Random stream of one identity's attributes."""
    return np.random.default_rng([seed, 1, domain, key])


def make_identities(seed: int, domain: int, keys: list[int], pids: list[int], *, season: str,
                    shared_fraction: float) -> list[Identity]:
    """Identities of one split; at least ``shared_fraction`` of them are outfit twins.

    Pairs are formed among the split's identities (chosen with a split-specific random
    stream): the second of each pair copies the first's outfit.  ``ceil(fraction * n / 2)``
    pairs give a share of identities in a pair >= ``shared_fraction``.
    """
    n = len(keys)
    people = [random_identity(identity_rng(seed, domain, k), k, p, season) for k, p in zip(keys, pids)]
    if n < 2 or shared_fraction <= 0:
        return people
    n_pairs = min(n // 2, math.ceil(shared_fraction * n / 2))
    order = np.random.default_rng([seed, 2, domain, keys[0]]).permutation(n)
    for j in range(n_pairs):
        a, b = int(order[2 * j]), int(order[2 * j + 1])
        rng = np.random.default_rng([seed, 3, domain, keys[b]])
        people[b] = make_twin(people[a], rng, keys[b], pids[b], season)
    return people
