"""Synthetic text-to-video prompt corpus and concept prompt sets for the built-in demo.

Everything here is generated from the word lists and sentence templates below with a
seeded `random.Random`, so the shipped files under `clear_sae/data/prompts` can always be
rebuilt bit for bit with::

    python -m clear_sae.corpus            # writes clear_sae/data/prompts
    python -m clear_sae.corpus --out DIR  # writes somewhere else

The corpus is mostly generic captions (people, animals, vehicles, objects, instruments in
cities, landscapes and rooms, with camera and style cues).  Each concept in `CONCEPTS`
is woven into a small share of captions (about 2.5-3.5% each) so that a dictionary
trained on the corpus has seen it, while the generic word lists never mention any concept.
`generate_captions(n, broad=True)` draws the generic words from `broad_vocabulary()`, these lists extended by
`clear_sae.vocabulary` (about twice the distinct words), for dictionaries meant to know a larger world.

For concept erasure, `concept_prompts` gives matched pairs: a target prompt that names
the concept and a non-target prompt that is the same sentence with the concept phrase
replaced by a same-kind alternative (article fixed where needed).
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from clear_sae import vocabulary as extra
from clear_sae.io import atomic_write_text

__all__ = [
    "CONCEPTS",
    "ConceptSpec",
    "KINDS",
    "TEMPLATES",
    "Vocabulary",
    "broad_vocabulary",
    "concept_prompts",
    "generate_captions",
    "mentions_concept",
    "write_demo_prompts",
]

# ---------------------------------------------------------------------------
# Small grammar helpers
# ---------------------------------------------------------------------------

_AN_EXCEPTIONS = ("hour", "honest", "honor", "heir")
_A_EXCEPTIONS = ("uni", "use", "usu", "uto", "eu", "one", "once", "ukulele")


def _article(phrase: str) -> str:
    """Return "a" or "an" for the noun phrase `phrase` (by its first sound, roughly)."""
    word = phrase.split()[0].lower()
    if word.startswith(_AN_EXCEPTIONS):
        return "an"
    if word.startswith(_A_EXCEPTIONS):
        return "a"
    if word[0] == "8" or word.startswith(("11", "18")):
        return "an"
    return "an" if word[0] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def _cap(text: str) -> str:
    """Upper-case the first character only (str.capitalize would lower the rest)."""
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------
# Generic word lists (none of them mentions a concept from CONCEPTS)
# ---------------------------------------------------------------------------

PEOPLE: list[str] = [
    "young woman",
    "old man",
    "little girl",
    "little boy",
    "chef",
    "street musician",
    "businessman in a gray suit",
    "couple",
    "group of friends",
    "astronaut",
    "firefighter",
    "hiker",
    "grandmother",
    "teenager",
    "police officer",
    "farmer",
    "scientist in a lab coat",
    "fisherman",
    "painter",
    "photographer",
    "woman in a red dress",
    "man with a long beard",
    "child in a yellow raincoat",
    "knight in shining armor",
    "elderly couple",
    "nurse",
    "college student",
    "mechanic",
    "detective in a trench coat",
    "girl with curly hair",
    "tourist with a camera",
    "boy in a baseball cap",
    "monk in orange robes",
    "robot",
]

LAND_ANIMALS: list[str] = [
    "cat",
    "kitten",
    "fox",
    "rabbit",
    "deer",
    "brown bear",
    "lion",
    "tiger",
    "elephant",
    "giraffe",
    "panda",
    "red panda",
    "squirrel",
    "raccoon",
    "goat",
    "sheep",
    "wolf",
    "koala",
    "monkey",
    "hedgehog",
    "zebra",
    "camel",
    "llama",
    "tortoise",
    "meerkat",
    "lynx",
]

BIRDS: list[str] = [
    "owl",
    "eagle",
    "parrot",
    "hummingbird",
    "swan",
    "seagull",
    "crow",
    "flamingo",
    "peacock",
    "heron",
    "butterfly",
    "dragonfly",
    "kingfisher",
]

SEA_ANIMALS: list[str] = [
    "dolphin",
    "humpback whale",
    "octopus",
    "sea turtle",
    "jellyfish",
    "shark",
    "clownfish",
    "manta ray",
    "seal",
    "school of silver fish",
    "sea otter",
]

ROAD_VEHICLES: list[str] = [
    "red sports car",
    "vintage convertible",
    "yellow taxi",
    "double-decker bus",
    "pickup truck",
    "motorcycle",
    "delivery van",
    "police car",
    "vintage camper van",
    "race car",
    "jeep",
    "old tractor",
    "ice cream truck",
]

BOATS: list[str] = [
    "sailboat",
    "fishing boat",
    "wooden canoe",
    "yacht",
    "ferry",
    "old pirate ship",
    "kayak",
    "rowboat",
    "paper boat",
    "gondola",
]

AIRCRAFT: list[str] = [
    "hot air balloon",
    "helicopter",
    "vintage biplane",
    "passenger jet",
    "paper airplane",
    "blimp",
    "glider",
    "seaplane",
]

TRAINS: list[str] = ["steam train", "bullet train", "old freight train", "vintage tram", "cable car"]

OBJECTS: list[str] = [
    "cup of coffee",
    "candle",
    "antique clock",
    "glass of red wine",
    "vintage typewriter",
    "stack of old books",
    "spinning top",
    "bouquet of roses",
    "paper lantern",
    "crystal ball",
    "teapot",
    "rubber duck",
    "origami crane",
    "hourglass",
    "music box",
    "bowl of ramen",
    "sunflower",
    "red apple",
    "pocket watch",
    "potted cactus",
    "desk lamp",
    "glass jar of fireflies",
]

INSTRUMENTS: list[str] = [
    "grand piano",
    "violin",
    "cello",
    "acoustic guitar",
    "saxophone",
    "drum kit",
    "harp",
    "trumpet",
    "electric guitar",
    "double bass",
    "flute",
    "clarinet",
]

LANDMARKS: list[str] = [
    "the Colosseum",
    "the Taj Mahal",
    "the Statue of Liberty",
    "the Golden Gate Bridge",
    "the Sydney Opera House",
    "the Great Wall of China",
    "the pyramids of Giza",
    "Machu Picchu",
    "Big Ben",
    "the Leaning Tower of Pisa",
    "Mount Fuji",
    "the Brandenburg Gate",
    "Tower Bridge",
    "Stonehenge",
    "the Acropolis",
    "Angkor Wat",
    "the Sagrada Familia",
    "the Space Needle",
]

# Places are (preposition, noun phrase) pairs, grouped by the kind of setting.
PLACES: dict[str, list[tuple[str, str]]] = {
    "city": [
        ("on", "a busy street in Tokyo"),
        ("in", "a narrow alley in Rome"),
        ("in", "Times Square"),
        ("on", "a rooftop in New York"),
        ("in", "a quiet village square"),
        ("along", "a canal in Amsterdam"),
        ("on", "a neon-lit street in Hong Kong"),
        ("at", "a crowded night market in Taipei"),
        ("on", "a cobblestone street in Prague"),
        ("in", "a park in London"),
        ("on", "a bridge in Venice"),
        ("at", "a busy train station"),
        ("in", "a sunny plaza in Barcelona"),
        ("on", "a street corner in Havana"),
        ("in", "Central Park"),
        ("in", "a subway station in Seoul"),
        ("on", "the boardwalk in Santa Monica"),
        ("in", "a spice market in Marrakech"),
        ("in", "a suburban backyard"),
        ("on", "a quiet street in Kyoto"),
        ("outside", "a café in Lisbon"),
        ("in", "a harbor town in Greece"),
    ],
    "forest": [
        ("in", "a misty pine forest"),
        ("in", "a bamboo forest"),
        ("in", "an autumn forest"),
        ("in", "a tropical rainforest"),
        ("in", "an ancient redwood forest"),
        ("in", "a sunlit birch grove"),
        ("in", "an enchanted forest"),
        ("in", "a mossy forest"),
        ("in", "a jungle clearing"),
        ("in", "an orchard full of cherry blossoms"),
    ],
    "open_land": [
        ("in", "a field of sunflowers"),
        ("in", "a lavender field"),
        ("on", "a grassy hill"),
        ("in", "a mountain meadow"),
        ("among", "red sand dunes"),
        ("on", "a rocky cliff"),
        ("in", "a golden wheat field"),
        ("in", "a canyon"),
        ("on", "the African savanna"),
        ("in", "a tulip field in the Netherlands"),
        ("near", "a roaring waterfall"),
        ("in", "the Scottish Highlands"),
        ("on", "a rice terrace in Bali"),
        ("in", "a valley full of wildflowers"),
        ("on", "a windswept moor"),
    ],
    "shore": [
        ("on", "a sandy beach"),
        ("along", "a rocky shoreline"),
        ("on", "a tropical beach"),
        ("by", "a quiet lake"),
        ("along", "a riverbank"),
        ("on", "a wooden pier"),
        ("on", "a black sand beach in Iceland"),
        ("on", "a windy coastline"),
    ],
    "indoor": [
        ("in", "a cozy kitchen"),
        ("in", "a sunlit living room"),
        ("in", "a dimly lit jazz club"),
        ("in", "an old library"),
        ("in", "an empty warehouse"),
        ("in", "a cluttered artist's studio"),
        ("in", "a train compartment"),
        ("in", "a candlelit cabin"),
        ("in", "a futuristic spaceship"),
        ("in", "a small bedroom"),
        ("in", "a busy café"),
        ("in", "a greenhouse"),
        ("in", "a museum gallery"),
        ("in", "a laundromat"),
    ],
    "underwater": [
        ("in", "a coral reef"),
        ("in", "the deep ocean"),
        ("in", "a kelp forest"),
        ("near", "a sunken shipwreck"),
        ("in", "crystal-clear tropical water"),
        ("in", "a giant aquarium"),
        ("beneath", "the Arctic ice"),
        ("in", "a dark sea cave"),
    ],
    "water_surface": [
        ("on", "a calm lake"),
        ("across", "a stormy sea"),
        ("along", "a canal in Venice"),
        ("down", "a winding river"),
        ("on", "a misty fjord"),
        ("in", "a quiet harbor"),
        ("on", "the open ocean"),
        ("on", "a lotus pond"),
        ("across", "a mountain lake"),
    ],
    "sky": [
        ("over", "a mountain valley"),
        ("above", "the clouds"),
        ("over", "a desert canyon"),
        ("over", "a city skyline"),
        ("across", "a stormy sky"),
        ("over", "the ocean"),
        ("above", "the green countryside"),
        ("over", "a rainforest canopy"),
        ("over", "a patchwork of farm fields"),
    ],
    "road": [
        ("along", "a coastal highway"),
        ("down", "an empty desert road"),
        ("through", "a busy city street"),
        ("across", "a long suspension bridge"),
        ("along", "a winding mountain road"),
        ("through", "a tunnel of autumn trees"),
        ("through", "a neon-lit downtown"),
        ("on", "a dirt road in the countryside"),
        ("down", "Route 66"),
        ("through", "a sleepy seaside town"),
    ],
    "rail": [
        ("through", "a mountain pass"),
        ("across", "a stone viaduct"),
        ("along", "a rugged coastline"),
        ("through", "rolling green hills"),
        ("into", "a busy city station"),
        ("through", "a dense forest"),
        ("past", "a field of wildflowers"),
    ],
    "tabletop": [
        ("on", "a wooden table"),
        ("on", "a windowsill"),
        ("on", "a marble countertop"),
        ("on", "a velvet cloth"),
        ("on", "a kitchen shelf"),
        ("on", "a desk by the window"),
    ],
    "stage": [
        ("on", "an empty stage"),
        ("in", "a concert hall"),
        ("in", "a dimly lit jazz club"),
        ("in", "a recording studio"),
        ("in", "a music shop"),
    ],
    "surf": [
        ("on", "a giant ocean wave"),
        ("off", "the coast of Hawaii"),
        ("at", "a famous surf break"),
        ("through", "a turquoise barrel wave"),
    ],
    "swim": [
        ("in", "a turquoise lagoon"),
        ("in", "a crystal-clear lake"),
        ("in", "a rooftop pool"),
        ("in", "the open ocean"),
        ("in", "a hidden jungle pool"),
    ],
}

# Prepositions used with LANDMARKS, by subject category.
LANDMARK_PREPOSITIONS: dict[str, list[str]] = {
    "person": ["in front of", "near", "at the foot of"],
    "land_animal": ["in front of", "near"],
    "road_vehicle": ["past"],
    "bird": ["over", "above"],
    "aircraft": ["over", "above", "around"],
}

TIMES_OF_DAY: list[str] = [
    "at sunrise",
    "at sunset",
    "at dawn",
    "at dusk",
    "at night",
    "at midnight",
    "during golden hour",
    "at blue hour",
    "in the early morning",
    "on a quiet afternoon",
    "late at night",
    "under a full moon",
    "under a starry sky",
    "at noon",
    "in the evening",
]

WEATHER: list[str] = [
    "on a rainy night",
    "on a foggy morning",
    "during a thunderstorm",
    "on a windy afternoon",
    "under a clear blue sky",
    "on a hot summer day",
    "on a crisp autumn morning",
    "in light drizzle",
    "under heavy gray clouds",
    "on a misty morning",
    "in early spring",
    "in late autumn",
    "after a summer rain",
]

TIMES: list[str] = TIMES_OF_DAY + WEATHER

CAMERA_SHOTS: list[str] = [
    "close-up shot",
    "wide shot",
    "aerial shot",
    "slow-motion shot",
    "tracking shot",
    "handheld tracking shot",
    "low-angle shot",
    "overhead shot",
    "medium shot",
    "extreme close-up",
    "drone shot",
    "dolly shot",
    "static shot",
    "establishing shot",
    "macro shot",
    "POV shot",
    "long shot",
    "Dutch angle shot",
]

CAMERA_MOVES: list[str] = [
    "slow pan",
    "slow pan to the right",
    "handheld camera",
    "the camera slowly zooms in",
    "slow dolly forward",
    "the camera orbits the subject",
    "smooth gimbal movement",
    "rack focus",
    "shallow depth of field",
    "whip pan",
    "slow push-in",
    "crane shot rising upward",
    "time-lapse",
    "slow motion",
    "the camera tilts up",
    "locked-off tripod shot",
    "gentle camera shake",
    "slow pull-back",
]

STYLES: list[str] = [
    "watercolor",
    "watercolor painting",
    "claymation",
    "film noir",
    "in the style of Monet",
    "in the style of Hokusai",
    "in the style of Rembrandt",
    "in the style of Edward Hopper",
    "anime style",
    "pixel art",
    "oil painting",
    "pencil sketch",
    "stop-motion animation",
    "vintage 8mm footage",
    "photorealistic",
    "3D render",
    "low-poly 3D",
    "cyberpunk aesthetic",
    "ukiyo-e woodblock print",
    "impressionist painting",
    "cinematic, 4K",
    "shot on 35mm film",
    "black-and-white",
    "retro 1980s VHS look",
    "paper cutout animation",
    "comic book style",
    "steampunk aesthetic",
    "soft pastel colors",
    "hyperrealistic",
    "art deco poster style",
]

STYLE_MEDIA: list[str] = [
    "watercolor animation",
    "claymation video",
    "film noir scene",
    "anime clip",
    "pixel art animation",
    "stop-motion film",
    "black-and-white film",
    "oil painting animation",
    "charcoal sketch animation",
    "vintage cartoon",
    "low-poly 3D animation",
    "paper cutout animation",
    "retro VHS clip",
    "music video",
    "nature documentary clip",
]

LIGHTING: list[str] = [
    "golden hour lighting",
    "soft natural light",
    "neon lighting",
    "moody low-key lighting",
    "warm candlelight",
    "harsh midday sun",
    "backlit silhouette",
    "volumetric light rays",
    "soft diffused light",
    "dramatic rim lighting",
    "cool blue tones",
    "warm color grading",
]

MOODS: list[str] = [
    "peaceful",
    "dramatic",
    "whimsical",
    "melancholic",
    "dreamlike",
    "joyful",
    "eerie",
    "nostalgic",
    "epic",
    "serene",
    "playful",
    "mysterious",
    "tense",
    "cozy",
    "surreal",
]

# Subject categories: nouns, sampling weight, and "modes" (compatible actions and settings).
# A mode is (tag, actions, place groups); "{instrument}" in an action takes an INSTRUMENTS entry.
_PERSON_OUTDOOR_ACTIONS = [
    "walking",
    "running",
    "strolling",
    "jogging",
    "laughing",
    "taking photos",
    "talking on the phone",
    "waving at the camera",
    "looking around in wonder",
    "eating an ice cream cone",
    "carrying a bag of groceries",
    "riding a bicycle",
    "playing the {instrument}",
    "flying a kite",
    "juggling three balls",
    "reading a map",
    "sitting on a bench",
    "drinking coffee",
    "singing",
    "sketching in a notebook",
    "feeding pigeons",
    "blowing soap bubbles",
    "stretching",
    "waiting",
]
_PERSON_INDOOR_ACTIONS = [
    "cooking dinner",
    "reading a book",
    "typing on a laptop",
    "playing chess",
    "painting on a canvas",
    "drinking tea",
    "sweeping the floor",
    "practicing yoga",
    "playing the {instrument}",
    "writing a letter",
    "sleeping",
    "laughing",
    "folding laundry",
    "watering plants",
    "singing",
    "baking bread",
    "knitting a scarf",
    "looking out the window",
]

CATEGORIES: dict[str, tuple[list[str], float, list[tuple[str, list[str], list[str]]]]] = {
    "person": (
        PEOPLE,
        0.34,
        [
            ("out", _PERSON_OUTDOOR_ACTIONS, ["city", "landmark", "open_land", "shore", "forest"]),
            ("in", _PERSON_INDOOR_ACTIONS, ["indoor"]),
            ("hike", ["hiking", "camping", "exploring", "resting on a rock"], ["forest", "open_land"]),
            ("swim", ["swimming", "floating lazily", "snorkeling"], ["swim"]),
            ("surf", ["surfing", "paddling out"], ["surf"]),
        ],
    ),
    "land_animal": (
        LAND_ANIMALS,
        0.16,
        [
            (
                "out",
                [
                    "running",
                    "walking slowly",
                    "sleeping",
                    "eating",
                    "playing",
                    "jumping",
                    "looking at the camera",
                    "exploring",
                    "yawning",
                    "resting",
                    "sniffing the ground",
                    "chasing a butterfly",
                    "stretching",
                ],
                ["forest", "open_land", "shore", "landmark"],
            ),
            (
                "in",
                [
                    "sleeping",
                    "looking out the window",
                    "sitting",
                    "exploring",
                    "yawning",
                    "playing with a ball of yarn",
                ],
                ["indoor"],
            ),
            ("city", ["wandering", "walking", "sitting"], ["city"]),
        ],
    ),
    "bird": (
        BIRDS,
        0.06,
        [
            ("fly", ["flying", "soaring", "gliding", "circling", "fluttering"], ["sky", "landmark"]),
            (
                "perch",
                ["perched on a branch", "resting", "preening its feathers", "looking around", "calling out"],
                ["forest"],
            ),
        ],
    ),
    "sea_animal": (
        SEA_ANIMALS,
        0.06,
        [
            ("swim", ["swimming", "gliding", "drifting slowly", "diving", "circling", "hunting"], ["underwater"]),
        ],
    ),
    "road_vehicle": (
        ROAD_VEHICLES,
        0.08,
        [
            ("drive", ["driving", "speeding", "cruising", "racing", "driving slowly"], ["road", "landmark"]),
        ],
    ),
    "boat": (
        BOATS,
        0.05,
        [
            ("sail", ["sailing", "drifting", "floating", "gliding", "bobbing"], ["water_surface"]),
        ],
    ),
    "aircraft": (
        AIRCRAFT,
        0.05,
        [
            ("fly", ["flying", "drifting", "soaring", "floating", "circling"], ["sky", "landmark"]),
        ],
    ),
    "train": (
        TRAINS,
        0.04,
        [
            ("rail", ["speeding", "rolling", "winding its way", "moving slowly"], ["rail"]),
        ],
    ),
    "object": (
        OBJECTS,
        0.10,
        [
            (
                "still",
                [
                    "resting",
                    "spinning slowly",
                    "glowing softly",
                    "sitting",
                    "slowly rotating",
                    "catching the light",
                    "standing",
                ],
                ["tabletop", "indoor"],
            ),
        ],
    ),
    "instrument": (
        INSTRUMENTS,
        0.06,
        [
            ("still", ["resting", "standing alone", "gleaming under a spotlight", "sitting"], ["stage", "indoor"]),
        ],
    ),
}

# ---------------------------------------------------------------------------
# Corpus templates
# ---------------------------------------------------------------------------
# Fields: S subject with article (S_ capitalised), A action, P place phrase (P_ capitalised),
# Pn place noun phrase, T time or weather (T_), C camera shot (C_), aC/aC_ with article,
# M camera move, St style, Sa style medium (aSa_ with article), L lighting, Mo mood (aMo_).

TEMPLATES: list[str] = [
    "{aC_} of {S} {A} {P} {T}, {M}",
    "{S_} {A} {P} {T}, {St}",
    "{S_} {A} {P} {T}. {C_}, {M}.",
    "{aSa_} of {S} {A} {P}",
    "{T_}, {S} {A} {P}, {M}",
    "{P_}, {S} {A} {T}, {St}",
    "{S_} {A} {P} {T}",
    "{S_} {A} {P}, {M}",
    "Cinematic footage of {S} {A} {P} {T}",
    "The camera follows {S} {A} {P} {T}",
    "A wide shot of {Pn} {T}, with {S} {A} in the foreground",
    "A time-lapse of {Pn} {T}, {St}",
    "{S_}, seen from above, {A} {P} {T}",
    "Slow-motion video of {S} {A} {P}, {St}",
    "{aSa_} showing {S} {A} {P} {T}",
    "A short film about {S} {A} {P}, {St}",
    "Handheld footage of {S} {A} {P} {T}",
    "{S_} {A} {P}. {C_}, {L}.",
    "{C_} of {S} {A} {P}, {L}, {M}",
    "{S_} {A} {P} {T}, {L}, {St}",
    "A first-person view of {S} {A} {P} {T}",
    "Documentary-style footage of {S} {A} {P}, {L}",
    "{aMo_} scene of {S} {A} {P} {T}",
    "{S_} {A} {P}, {Mo} atmosphere, {M}",
    "{S_} {A} {P} {T} as the camera slowly zooms in",
    "{T_} {P}: {S} {A}, {C}",
    "A vintage home video of {S} {A} {P}",
    "Stop-motion animation of {S} {A} {P} {T}",
    "An extreme close-up of {S} {A} {P}, shallow depth of field",
    "{S_} {A} {P} {T}, shot on 35mm film, {M}",
    "Tracking shot: {S} {A} {P} {T}, {St}",
    "{aSa_} in which {S} is {A} {P}",
    "{aMo_} {Sa} of {S} {A} {P}, {M}",
    "Beautiful {C} of {S} {A} {P} {T}, {St}",
    "{S_} {A} {P} {T}, captured in {aC}, {L}",
    "In this {Mo} clip, {S} is {A} {P} {T}",
    "{aC_} slowly revealing {S} {A} {P} {T}",
    "{P_} {T}, {S} {A}, {C}",
    "A dreamy sequence of {S} {A} {P}, {St}, {M}",
    "{S_} {A} {P}, {L}, {Mo} mood",
]

_FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "subject": ("S", "S_"),
    "action": ("A",),
    "place": ("P", "P_", "Pn"),
    "time": ("T", "T_"),
    "style": ("St",),
    "media": ("Sa", "aSa_"),
}


def _template_groups(template: str) -> set[str]:
    fields = set(re.findall(r"\{(\w+)\}", template))
    return {group for group, names in _FIELD_GROUPS.items() if fields & set(names)}


_TEMPLATE_GROUPS: list[set[str]] = [_template_groups(t) for t in TEMPLATES]

# ---------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------

KINDS: tuple[str, ...] = ("object", "animal", "style", "place", "action", "scene")


@dataclass(frozen=True)
class ConceptSpec:
    """One erasable concept: its surface forms (`phrases`) and same-kind stand-ins (`swaps`).

    Every phrase and every swap fits the same slot in the concept's templates, so a target
    prompt becomes its non-target twin by replacing the phrase with a swap.
    """

    name: str
    kind: str
    phrases: list[str]
    swaps: list[str]
    # Corpus injections: each dict names a subject category ("category"), allowed mode tags
    # ("modes"), optionally the place groups to draw from ("groups") and field overrides ("subject",
    # "action", "place", "time", "style", "media"), whose strings may hold {X} (the phrase) and {aX}
    # (the phrase with its article).
    corpus_uses: list[dict] = field(default_factory=list, repr=False, compare=False)
    # Templates for concept_prompts; {X}/{aX}/{aX_} is the concept slot.
    templates: list[str] = field(default_factory=list, repr=False, compare=False)


_OUTDOOR_PERSON = ["city", "landmark", "open_land", "shore", "forest"]

CONCEPTS: dict[str, ConceptSpec] = {
    "french_horn": ConceptSpec(
        name="french_horn",
        kind="object",
        phrases=["French horn", "french horn"],
        swaps=[
            "trumpet",
            "trombone",
            "tuba",
            "violin",
            "cello",
            "saxophone",
            "flute",
            "clarinet",
            "oboe",
            "harp",
            "accordion",
            "banjo",
        ],
        corpus_uses=[
            {"category": "person", "modes": ["out", "in"], "action": ["playing the {X}", "practicing the {X}"]},
            {"category": "instrument", "subject": ["{X}"]},
        ],
        templates=[
            "{Pe_} playing the {X} {Po} {T}, {M}",
            "{aC_} of {Pe} playing the {X} {Pi}, {L}",
            "{aX_} resting on a velvet chair in an empty concert hall, {M}",
            "A street musician playing the {X} for a small crowd {Pc} {T}",
            "A child practicing the {X} {Pi}, {St}",
            "An orchestra rehearsing on stage as the camera slowly pushes in on {aX}",
            "{aX_} lying on a park bench {T}, {C}",
            "A jazz band performing in a smoky club, close-up on the {X} player, {L}",
            "An old {X} gleaming in a shop window {T}, {St}",
            "{Pe_} carrying {aX} case through a train station, {M}",
        ],
    ),
    "umbrella": ConceptSpec(
        name="umbrella",
        kind="object",
        phrases=["umbrella", "red umbrella", "black umbrella"],
        swaps=[
            "backpack",
            "red backpack",
            "suitcase",
            "black suitcase",
            "lantern",
            "balloon",
            "red balloon",
            "kite",
            "briefcase",
            "wicker basket",
            "bouquet of flowers",
            "newspaper",
        ],
        corpus_uses=[
            {
                "category": "person",
                "modes": ["out"],
                "action": ["holding {aX}", "walking with {aX}", "opening {aX}", "carrying {aX}"],
            },
            {"category": "object", "subject": ["{X}"]},
        ],
        templates=[
            "{Pe_} holding {aX} {Po} {T}, {M}",
            "{aX_} left behind on a park bench {T}, {C}",
            "A gust of wind carrying {aX} down an empty street, {St}",
            "{aC_} of {Pe} walking with {aX} {Pc}, {L}",
            "{Pe_} opening {aX} {Po} {T}",
            "{aX_} floating slowly across a pond {T}, {St}",
            "A close-up of a hand gripping {aX} {T}, shallow depth of field",
            "A child with {aX} waiting at a bus stop {T}, {M}",
            "{Pe_} swinging {aX} while strolling {Pc}, {Mo} atmosphere",
        ],
    ),
    "dog": ConceptSpec(
        name="dog",
        kind="animal",
        phrases=["dog", "puppy", "golden retriever"],
        swaps=[
            "cat",
            "kitten",
            "fox",
            "rabbit",
            "raccoon",
            "goat",
            "lamb",
            "piglet",
            "red panda",
            "squirrel",
            "ferret",
            "hedgehog",
        ],
        corpus_uses=[
            {"category": "land_animal", "subject": ["{X}"]},
            {"category": "person", "modes": ["out"], "action": ["walking {aX}", "playing with {aX}"]},
        ],
        templates=[
            "{aX_} {Aa} {Pa} {T}, {M}",
            "{aC_} of {aX} {Aa} {Pa} {T}",
            "{Pe_} playing with {aX} {Po} {T}, {St}",
            "{aX_} sleeping on a rug {Pi}, {L}",
            "{aX_} looking out of a car window on a road trip, {M}",
            "{aX_} chasing a ball {Pa}, slow motion",
            "A slow-motion shot of {aX} shaking off water {T}",
            "{aX_} wearing sunglasses in the back seat of a convertible, {St}",
            "{Pe_} walking {aX} {Pc} {T}",
            "{aMo_} scene of {aX} {Aa} {Pa}",
        ],
    ),
    "horse": ConceptSpec(
        name="horse",
        kind="animal",
        phrases=["horse", "pony", "stallion"],
        swaps=["camel", "donkey", "cow", "elephant", "llama", "yak", "bull", "reindeer", "ox", "buffalo"],
        corpus_uses=[
            {"category": "land_animal", "modes": ["out"], "subject": ["{X}"]},
            {"category": "person", "modes": ["out", "hike"], "action": ["riding {aX}", "feeding {aX}"]},
        ],
        templates=[
            "{aX_} running {Pa} {T}, {M}",
            "{Pe_} riding {aX} {Pa} {T}, {St}",
            "{aC_} of {aX} grazing {Pa} {T}",
            "{aX_} standing in a wooden barn, {L}",
            "{aX_} pulling a cart through a village {T}, {C}",
            "A farmer feeding {aX} {Pa}, {M}",
            "{aX_} drinking from a river {T}, {St}",
            "{aX_} trotting along a beach {T}, {L}",
            "{aMo_} scene of {aX} resting {Pa}",
        ],
    ),
    "van_gogh": ConceptSpec(
        name="van_gogh",
        kind="style",
        phrases=["Van Gogh", "Vincent van Gogh"],
        swaps=[
            "Monet",
            "Claude Monet",
            "Rembrandt",
            "Picasso",
            "Hokusai",
            "Gustav Klimt",
            "Vermeer",
            "Salvador Dali",
            "Cezanne",
            "Edvard Munch",
            "Matisse",
            "Frida Kahlo",
        ],
        corpus_uses=[
            {"style": ["in the style of {X}", "{X} style", "painted like {aX} masterpiece"]},
            {"media": ["{X}-style animation", "{X}-inspired painting"]},
        ],
        templates=[
            "{S_} {A} {P} {T}, in the style of {X}",
            "{aC_} of {S} {A} {P}, painted in the style of {X}",
            "{S_} {A} {P}, {X} style, {M}",
            "An animated painting of {S} {A} {P} {T}, inspired by {X}",
            "{Pn_} {T}, reimagined as a painting by {X}",
            "{aX_}-inspired animation of {S} {A} {P}",
            "{S_} {A} {P} {T}, with brushstrokes like {aX} painting",
            "Oil painting of {Pn} {T} in the manner of {X}, {M}",
        ],
    ),
    "eiffel_tower": ConceptSpec(
        name="eiffel_tower",
        kind="place",
        phrases=["Eiffel Tower", "eiffel tower"],
        swaps=[
            "Statue of Liberty",
            "Colosseum",
            "Taj Mahal",
            "Sydney Opera House",
            "Golden Gate Bridge",
            "Leaning Tower of Pisa",
            "Brandenburg Gate",
            "Tower Bridge",
            "Space Needle",
            "Empire State Building",
            "Sagrada Familia",
            "Tokyo Tower",
        ],
        corpus_uses=[
            {
                "category": "person",
                "modes": ["out"],
                "place": [("in front of", "the {X}"), ("near", "the {X}"), ("at the foot of", "the {X}")],
            },
            {"category": "land_animal", "modes": ["out"], "place": [("in front of", "the {X}"), ("near", "the {X}")]},
            {"category": "road_vehicle", "place": [("past", "the {X}")]},
            {"category": "aircraft", "place": [("over", "the {X}"), ("above", "the {X}")]},
            {"category": "bird", "modes": ["fly"], "place": [("over", "the {X}"), ("around", "the {X}")]},
        ],
        templates=[
            "{Pe_} {Ap} in front of the {X} {T}, {M}",
            "An aerial shot circling the {X} {T}, {St}",
            "The {X} glowing against the evening sky, {M}",
            "Fireworks bursting above the {X}, {St}",
            "A time-lapse of clouds drifting past the {X} {T}",
            "Tourists taking photos at the foot of the {X} {T}, {C}",
            "{aV_} driving past the {X} {T}, {L}",
            "A hot air balloon floating over the {X} {T}, {M}",
            "A wide shot of the {X} {T}, with {Pe} {Ap} in the foreground",
            "A postcard view of the {X} {T}, {St}",
        ],
    ),
    "dancing": ConceptSpec(
        name="dancing",
        kind="action",
        phrases=["dancing"],
        swaps=[
            "running",
            "jumping",
            "sitting",
            "cooking",
            "walking",
            "stretching",
            "singing",
            "reading",
            "laughing",
            "clapping",
            "waving",
            "jogging",
        ],
        corpus_uses=[
            {
                "category": "person",
                "modes": ["out", "in"],
                "action": ["{X}", "{X} joyfully", "{X} slowly", "{X} to loud music", "{X} barefoot"],
            },
            {"category": "land_animal", "modes": ["out", "in"], "action": ["{X} on its hind legs"]},
        ],
        templates=[
            "{Pe_} {X} {Po} {T}, {M}",
            "{aC_} of {Pe} {X} {Pi}, {L}",
            "Two friends {X} together {Po} {T}, {St}",
            "A crowd of people {X} at a street festival {T}, {C}",
            "{Pe_} {X} alone in an empty warehouse, {L}",
            "An elderly couple {X} in their kitchen, {M}",
            "{Pe_} {X} in the rain {Pc}, {St}",
            "A robot {X} on a rooftop {T}, {Mo} atmosphere",
            "{aMo_} scene of {Pe} {X} {Po}",
            "Kids {X} around a campfire {T}, handheld camera",
        ],
    ),
    "skateboarding": ConceptSpec(
        name="skateboarding",
        kind="action",
        phrases=["skateboarding"],
        swaps=[
            "cycling",
            "jogging",
            "running",
            "walking",
            "strolling",
            "sprinting",
            "riding a scooter",
            "riding a bicycle",
        ],
        corpus_uses=[
            {
                "category": "person",
                "modes": ["out"],
                "groups": ["city", "landmark", "road", "shore"],
                "action": ["{X}", "{X} fast", "{X} and doing tricks"],
            },
            {"category": "land_animal", "modes": ["city"], "action": ["{X}"]},
        ],
        templates=[
            "{Pe_} {X} down a steep hill {T}, {M}",
            "A teenager {X} through an empty parking lot {T}, {St}",
            "{aC_} of {Pe} {X} along the boardwalk, {L}",
            "{Pe_} {X} past {Lm} {T}, {C}",
            "A group of kids {X} {Pc} {T}",
            "{Pe_} {X} through a neon-lit tunnel, {St}",
            "A low-angle shot of {Pe} {X} toward the camera {T}",
            "{Pe_} {X} across a long bridge, {M}",
            "A cat {X} down a hallway {Pi}, {St}",
        ],
    ),
    "snow": ConceptSpec(
        name="snow",
        kind="scene",
        phrases=["snow", "heavy snow", "falling snow"],
        swaps=["rain", "heavy rain", "pouring rain", "fog", "thick fog", "mist", "drizzle", "haze", "dust storm"],
        corpus_uses=[
            {
                "category": "person",
                "modes": ["out", "hike"],
                "time": ["during a heavy snowfall", "as snow falls softly", "on a snowy evening", "in the {X}"],
            },
            {
                "category": "land_animal",
                "modes": ["out"],
                "time": ["during a heavy snowfall", "on a snowy morning", "in the {X}"],
            },
            {"category": "road_vehicle", "time": ["during a snowstorm", "in the {X}"]},
            {"category": "train", "time": ["during a snowstorm", "on a snowy morning"]},
            {
                "category": "person",
                "modes": ["out"],
                "place": [
                    ("in", "a snowy pine forest"),
                    ("across", "a snow-covered field"),
                    ("in", "a snowy mountain village"),
                    ("on", "a snowy street in Tokyo"),
                ],
            },
        ],
        templates=[
            "{Pe_} walking through the {X} {Tt}, {M}",
            "{aV_} driving slowly through the {X} on a mountain road, {L}",
            "A quiet village street in the {X} {Tt}, {St}",
            "{aC_} of {Pe} standing alone in the {X}, {M}",
            "A lighthouse barely visible through the {X} {Tt}",
            "{An_} wandering through the {X} {Tt}, {C}",
            "A train crossing a bridge in the {X}, {St}",
            "Children playing in the {X} {Tt}, {M}",
            "A slow pan across a mountain cabin in the {X} {Tt}",
            "City lights glowing through the {X} {Tt}, {L}",
        ],
    ),
}


def mentions_concept(text: str, name: str) -> bool:
    """True when `text` contains any phrase of concept `name` (case-insensitive substring)."""
    lowered = text.lower()
    return any(phrase.lower() in lowered for phrase in CONCEPTS[name].phrases)


# ---------------------------------------------------------------------------
# Caption construction
# ---------------------------------------------------------------------------


def _fill_x(text: str, x: str) -> str:
    return text.replace("{aX}", _with_article(x)).replace("{X}", x)


@dataclass(frozen=True)
class Vocabulary:
    """The word lists a generic caption draws from (see `CATEGORIES` for the shape of `categories`)."""

    categories: dict[str, tuple[list[str], float, list[tuple[str, list[str], list[str]]]]]
    places: dict[str, list[tuple[str, str]]]
    times: list[str]
    styles: list[str]

    @property
    def instruments(self) -> list[str]:
        """What a person may be playing in an action."""
        return self.categories["instrument"][0]


DEMO_VOCABULARY = Vocabulary(CATEGORIES, PLACES, TIMES, STYLES)
"""The corpus's own word lists (about 800 distinct words)."""

FOOD_WEIGHT = 0.06
"""Sampling weight of the broad vocabulary's food category, beside the weights in `CATEGORIES`."""


def broad_vocabulary() -> Vocabulary:
    """The corpus's word lists extended by `clear_sae.vocabulary`: more subjects, actions, places, weather and
    styles in every category, and a food category."""
    categories = {}
    for name, (nouns, weight, modes) in CATEGORIES.items():
        more = extra.EXTRA_ACTIONS.get(name, {})
        categories[name] = (
            nouns + extra.EXTRA_NOUNS.get(name, []),
            weight,
            [(tag, actions + more.get(tag, []), groups) for tag, actions, groups in modes],
        )
    categories["food"] = (extra.FOODS, FOOD_WEIGHT, [("still", extra.FOOD_ACTIONS, ["tabletop"])])
    places = {group: pairs + extra.EXTRA_PLACES.get(group, []) for group, pairs in PLACES.items()}
    return Vocabulary(categories, places, TIMES + extra.EXTRA_TIMES, STYLES + extra.EXTRA_STYLES)


def _places_for(category: str, groups: list[str], vocab: Vocabulary = DEMO_VOCABULARY) -> list[tuple[str, str]]:
    places: list[tuple[str, str]] = []
    for group in groups:
        if group == "landmark":
            for prep in LANDMARK_PREPOSITIONS.get(category, ["near"]):
                places.extend((prep, landmark) for landmark in LANDMARKS)
        else:
            places.extend(vocab.places[group])
    return places


def _base_fields(rng: random.Random, vocab: Vocabulary = DEMO_VOCABULARY) -> dict[str, str]:
    """Slots that do not depend on the subject: time, camera, style, lighting, mood."""
    time = rng.choice(vocab.times)
    shot = rng.choice(CAMERA_SHOTS)
    medium = rng.choice(STYLE_MEDIA)
    mood = rng.choice(MOODS)
    return {
        "T": time,
        "T_": _cap(time),
        "C": shot,
        "C_": _cap(shot),
        "aC": _with_article(shot),
        "aC_": _cap(_with_article(shot)),
        "M": rng.choice(CAMERA_MOVES),
        "St": rng.choice(vocab.styles),
        "Sa": medium,
        "aSa_": _cap(_with_article(medium)),
        "L": rng.choice(LIGHTING),
        "Mo": mood,
        "aMo_": _cap(_with_article(mood)),
    }


def _scene(
    rng: random.Random, use: dict | None = None, x: str = "", vocab: Vocabulary = DEMO_VOCABULARY
) -> dict[str, str]:
    """Draw every corpus field from `vocab`; `use` (a concept injection) overrides some of them with `x`."""
    use = use or {}
    fields = _base_fields(rng, vocab)
    if "category" in use:
        category = use["category"]
    else:
        names = list(vocab.categories)
        category = rng.choices(names, weights=[vocab.categories[n][1] for n in names])[0]
    nouns, _, modes = vocab.categories[category]
    allowed = [m for m in modes if "modes" not in use or m[0] in use["modes"]]
    _, actions, groups = rng.choice(allowed)
    groups = use.get("groups", groups)

    subject = _fill_x(rng.choice(use["subject"]), x) if "subject" in use else rng.choice(nouns)
    action = _fill_x(rng.choice(use["action"]), x) if "action" in use else rng.choice(actions)
    if "{instrument}" in action:
        action = action.replace("{instrument}", rng.choice(vocab.instruments))
    if "place" in use:
        prep, noun = rng.choice(use["place"])
        noun = _fill_x(noun, x)
    else:
        prep, noun = rng.choice(_places_for(category, groups, vocab))
    if "time" in use:
        fields["T"] = _fill_x(rng.choice(use["time"]), x)
        fields["T_"] = _cap(fields["T"])
    if "style" in use:
        fields["St"] = _fill_x(rng.choice(use["style"]), x)
    if "media" in use:
        fields["Sa"] = _fill_x(rng.choice(use["media"]), x)
        fields["aSa_"] = _cap(_with_article(fields["Sa"]))

    subject_np = _with_article(subject)
    place = f"{prep} {noun}"
    fields.update(
        {
            "S": subject_np,
            "S_": _cap(subject_np),
            "A": action,
            "P": place,
            "P_": _cap(place),
            "Pn": noun,
        }
    )
    return fields


def _override_groups(use: dict) -> set[str]:
    return {key for key in ("subject", "action", "place", "time", "style", "media") if key in use}


def _caption(
    rng: random.Random, use: dict | None = None, x: str = "", vocab: Vocabulary = DEMO_VOCABULARY
) -> tuple[str, int]:
    """One caption and the index of its template."""
    needed = _override_groups(use or {})
    candidates = [i for i, groups in enumerate(_TEMPLATE_GROUPS) if needed <= groups]
    index = rng.choice(candidates)
    return TEMPLATES[index].format(**_scene(rng, use, x, vocab)), index


def _generate(n: int, seed: int, vocab: Vocabulary = DEMO_VOCABULARY) -> list[tuple[str, int, str | None]]:
    """Captions with their template index and injected concept name (None when generic)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    labels: list[str | None] = []
    for name in CONCEPTS:
        labels.extend([name] * rng.randint(round(0.025 * n), round(0.035 * n)))
    labels = labels[:n]
    labels.extend([None] * (n - len(labels)))
    rng.shuffle(labels)

    seen: set[str] = set()
    out: list[tuple[str, int, str | None]] = []
    for label in labels:
        for _ in range(1000):
            if label is None:
                text, index = _caption(rng, vocab=vocab)
            else:
                spec = CONCEPTS[label]
                text, index = _caption(rng, rng.choice(spec.corpus_uses), rng.choice(spec.phrases), vocab)
            if text not in seen:
                break
        else:
            raise ValueError(f"could not draw {n} distinct captions; ask for fewer")
        seen.add(text)
        out.append((text, index, label))
    return out


def generate_captions(n: int = 6000, seed: int = 0, broad: bool = False) -> list[str]:
    """Return `n` distinct synthetic text-to-video captions, the same list for the same seed.

    Most captions are generic; every concept in `CONCEPTS` is woven into roughly 2.5-3.5%
    of them (one concept per caption) so that a dictionary trained on the corpus sees it.
    `broad` draws the generic words from `broad_vocabulary()` instead of the corpus's own lists.
    """
    return [text for text, _, _ in _generate(n, seed, broad_vocabulary() if broad else DEMO_VOCABULARY)]


# ---------------------------------------------------------------------------
# Concept prompt pairs
# ---------------------------------------------------------------------------


def _pick(rng: random.Random, category: str, tags: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """An action and its compatible places for `category`, limited to modes tagged `tags`."""
    modes = [m for m in CATEGORIES[category][2] if m[0] in tags]
    _, actions, groups = rng.choice(modes)
    action = rng.choice(actions).replace("{instrument}", rng.choice(INSTRUMENTS))
    return action, _places_for(category, groups)


def _concept_fields(rng: random.Random) -> dict[str, str]:
    """Every non-concept slot a concept template can use, drawn from the generic lists."""
    fields = _scene(rng)
    person = _with_article(rng.choice(PEOPLE))
    animal = _with_article(rng.choice(LAND_ANIMALS))
    vehicle = _with_article(rng.choice(ROAD_VEHICLES))
    person_action, _ = _pick(rng, "person", ["out"])
    animal_action, animal_places = _pick(rng, "land_animal", ["out"])
    animal_places = [p for p in animal_places if p[1] not in LANDMARKS]
    outdoor = rng.choice(_places_for("person", ["city", "open_land", "shore", "forest"]))
    fields.update(
        {
            "Pe": person,
            "Pe_": _cap(person),
            "An": animal,
            "An_": _cap(animal),
            "aV_": _cap(vehicle),
            "Ap": person_action,
            "Aa": animal_action,
            "Pa": " ".join(rng.choice(animal_places)),
            "Po": " ".join(outdoor),
            "Pc": " ".join(rng.choice(PLACES["city"])),
            "Pi": " ".join(rng.choice(PLACES["indoor"])),
            "Lm": rng.choice(LANDMARKS),
            "Tt": rng.choice(TIMES_OF_DAY),
            "Pn_": _cap(fields["Pn"]),
        }
    )
    return fields


def _render(template: str, fields: dict[str, str], x: str) -> str:
    with_article = _with_article(x)
    slot = {"X": x, "aX": with_article, "aX_": _cap(with_article)}
    return template.format(**fields, **slot)


def concept_prompts(name: str, n: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """Return `n` target prompts naming concept `name` and their `n` non-target twins.

    `nontarget[i]` is `target[i]` with the concept phrase replaced by one of the concept's
    `swaps` (and "a"/"an" adjusted), so each pair differs only in the concept.  Targets are
    distinct, use templates of their own (not the corpus templates) and a seed stream
    separate from `generate_captions`, and are deterministic for a given seed.
    """
    if name not in CONCEPTS:
        known = ", ".join(sorted(CONCEPTS))
        raise KeyError(f"unknown concept {name!r}; known concepts: {known}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    spec = CONCEPTS[name]
    rng = random.Random(f"clear_sae.corpus.concept:{name}:{seed}")
    targets: list[str] = []
    nontargets: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(targets) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"could not draw {n} distinct prompts for concept {name!r}; ask for fewer")
        template = rng.choice(spec.templates)
        fields = _concept_fields(rng)
        phrase = rng.choice(spec.phrases)
        swap = rng.choice(spec.swaps)
        target = _render(template, fields, phrase)
        if target in seen:
            continue
        seen.add(target)
        targets.append(target)
        nontargets.append(_render(template, fields, swap))
    return targets, nontargets


# ---------------------------------------------------------------------------
# Shipped files
# ---------------------------------------------------------------------------

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "prompts"
_GENERATOR = "python -m clear_sae.corpus"


def _write_lines(path: Path, header: list[str], lines: list[str]) -> None:
    atomic_write_text(path, "".join(f"# {h}\n" for h in header) + "".join(f"{line}\n" for line in lines))


def write_demo_prompts(out_dir: Path) -> None:
    """Write the demo prompt files into `out_dir`.

    Files: `corpus.txt` (`generate_captions()` with its defaults) and, for every concept,
    `concepts/<name>.target.txt` and `concepts/<name>.nontarget.txt` (`concept_prompts(name)`
    with its defaults; line i of one pairs with line i of the other).  Each file is UTF-8,
    one prompt per line, after `#` comment lines saying what it is.
    """
    out_dir = Path(out_dir)
    captions = generate_captions()
    _write_lines(
        out_dir / "corpus.txt",
        [
            f"Demo caption corpus: {len(captions)} synthetic text-to-video prompts (seed 0), one per line.",
            f"Generated by `{_GENERATOR}`; edit the generator, not this file.",
        ],
        captions,
    )
    for name, spec in CONCEPTS.items():
        targets, nontargets = concept_prompts(name)
        pair_note = "line i pairs with line i of the other file of the pair"
        _write_lines(
            out_dir / "concepts" / f"{name}.target.txt",
            [
                f"Target prompts for concept '{name}' ({spec.kind}): each line mentions it; {pair_note}.",
                f"Generated by `{_GENERATOR}`; edit the generator, not this file.",
            ],
            targets,
        )
        _write_lines(
            out_dir / "concepts" / f"{name}.nontarget.txt",
            [
                f"Non-target prompts for concept '{name}' ({spec.kind}): the target sentences with the "
                f"concept swapped for a same-kind stand-in; {pair_note}.",
                f"Generated by `{_GENERATOR}`; edit the generator, not this file.",
            ],
            nontargets,
        )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: regenerate the demo prompt files."""
    parser = argparse.ArgumentParser(
        prog="python -m clear_sae.corpus",
        description="Write the demo caption corpus and concept target/non-target prompt files.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    write_demo_prompts(args.out)
    print(f"wrote demo prompts to {args.out}")


if __name__ == "__main__":
    main()
