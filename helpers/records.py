"""Owner-labelled data: loading records and the forget/retain split (METHOD.md §1).

Every stage of dareu reads records {"owner", "question", "answer"}. They come from
  - a JSON array or a JSON Lines file of such records, or
  - a TOFU folder (the layout of shared/data/tofu): `full.json` is 200 blocks of 20 QA pairs, one block
    per fictitious author, so owner = row index // 20, or
  - `synthetic_world()`, the embedded default: fictitious owners with owner-unique facts.
`--forget` names the owners to forget: owner names (comma-separated), a split name forget01/05/10
(the last 1/5/10 % of owners, as in TOFU), or a file of records (its owners are forgotten).

`data.py` (a stage) prints a split and writes a selection of records.
"""
import json
import os
import random

from helpers.cli import DareuError

# ----------------------------------------------------------------------------------------------
# 1. Loading records

def read_json_records(path):
    """Read a JSON array or JSON Lines file into a list of dicts; errors name the file and line."""
    if not os.path.isfile(path):
        raise DareuError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DareuError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DareuError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
    return rows


def tofu_owner(index):
    """TOFU owner id of row `index` of full.json: 20 consecutive QA pairs per author."""
    return f"tofu_{index // 20:03d}"


def load_records(path):
    """Owner-labelled records from a file, or from a TOFU folder (owner = row index // 20)."""
    if os.path.isdir(path):
        full = os.path.join(path, "full.json")
        if not os.path.isfile(full):
            raise DareuError(f"{path} is a folder but not a TOFU folder (no full.json)")
        rows = read_json_records(full)
        return [{"owner": tofu_owner(i), "question": r["question"], "answer": r["answer"]}
                for i, r in enumerate(rows)]
    rows = read_json_records(path)
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) and r.get(k)
                                              for k in ("owner", "question", "answer")):
            raise DareuError(f"{path}: record {i} needs non-empty string fields owner, question, answer")
    if not rows:
        raise DareuError(f"{path}: no records")
    return [{"owner": r["owner"], "question": r["question"], "answer": r["answer"]} for r in rows]


def owners_of(records):
    """Owners in order of first appearance (TOFU's forget splits are the *last* owners)."""
    return list(dict.fromkeys(r["owner"] for r in records))


# ----------------------------------------------------------------------------------------------
# 2. The forget set

SPLIT_PERCENT = {"forget01": 1, "forget05": 5, "forget10": 10}


def resolve_forget(spec, records):
    """Owners to forget, from owner names, a TOFU split name, or a file of records."""
    owners = owners_of(records)
    spec = (spec or "").strip()
    if spec in SPLIT_PERCENT:
        n = round(len(owners) * SPLIT_PERCENT[spec] / 100)
        forget = owners[len(owners) - n:]
    elif os.path.isfile(spec):
        forget = owners_of(load_records(spec))
    else:
        forget = list(dict.fromkeys(o.strip() for o in spec.split(",") if o.strip()))
    if not forget:
        raise DareuError(f"the forget set is empty (--forget {spec!r})")
    unknown = [o for o in forget if o not in owners]
    if unknown:
        shown = ", ".join(owners[:12]) + (f", ... ({len(owners)} in all)" if len(owners) > 12 else "")
        raise DareuError(f"unknown owner(s) {', '.join(unknown)}; valid owners: {shown}")
    if len(forget) == len(owners):
        raise DareuError("the forget set holds every owner: nothing would be retained")
    return forget


def split_records(records, forget_owners):
    """(forget records, retain records): retain = every other owner's records."""
    forget = set(forget_owners)
    return ([r for r in records if r["owner"] in forget], [r for r in records if r["owner"] not in forget])


def heldout_split(records, fraction, seed):
    """(train, heldout): `fraction` of each owner's records (at least one) held out."""
    rng = random.Random(seed)
    train, heldout = [], []
    for owner in owners_of(records):
        own = [r for r in records if r["owner"] == owner]
        rng.shuffle(own)
        n = max(1, round(fraction * len(own))) if len(own) > 1 else 0
        heldout += own[:n]
        train += own[n:]
    return train, heldout


# ----------------------------------------------------------------------------------------------
# 3. Batches: an endless shuffled stream, resumable

class Batches:
    """An endless stream of shuffled batches drawn with `rng`, one permutation per pass. Its position
    (state() / load_state()) goes into checkpoints, so a resumed run continues with the same batches."""

    def __init__(self, records, batch_size, rng):
        self.records, self.batch_size, self.rng = records, batch_size, rng
        self.order, self.start = [], 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.start >= len(self.order):   # a new pass
            self.order, self.start = self.rng.sample(range(len(self.records)), len(self.records)), 0
        batch = self.order[self.start:self.start + self.batch_size]
        self.start += self.batch_size
        return [self.records[i] for i in batch]

    def state(self):
        return {"order": self.order, "start": self.start}

    def load_state(self, state):
        self.order, self.start = list(state["order"]), state["start"]


# ----------------------------------------------------------------------------------------------
# 4. The embedded default: a synthetic world of fictitious owners (TOFU-like, small)

FIRST = ["Alara", "Brevik", "Cosima", "Dashiel", "Eluned", "Faroukh", "Ginevra", "Hollis", "Isolde",
         "Jovan", "Kalinda", "Lucan", "Mireille", "Nestor", "Orla", "Perrin"]
LAST = ["Venn", "Ostrow", "Quill", "Marrow", "Tallis", "Ebrahimi", "Corso", "Wyld", "Achterberg",
        "Petrakis", "Sorensen", "Ilves", "Dumont", "Kavanagh", "Rosales", "Thorne"]
# attribute -> pool of values; each owner gets a distinct value of each attribute
POOLS = {
    "city": ["Port Kessel", "Amberfold", "Lowmere", "Saltmarch", "Eskerby", "Wrenhollow", "Duncastle",
             "Mirefield", "Graywater", "Thornbury", "Cresthaven", "Oakvale", "Redcliff", "Brightmoor",
             "Fallowdeep", "Harrowgate"],
    "genre": ["mystery", "science fiction", "romance", "horror", "poetry", "fantasy", "history",
              "satire", "travel writing", "biography", "thriller", "folklore", "drama", "memoir",
              "philosophy", "children's fiction"],
    "father": ["a baker", "a sailor", "a surgeon", "a carpenter", "a judge", "a pilot", "a farmer",
               "a chemist", "an architect", "a tailor", "a miner", "a painter", "a banker", "a florist",
               "a locksmith", "a jeweller"],
    "mother": ["a teacher", "a nurse", "a lawyer", "an engineer", "a librarian", "a dentist",
               "a musician", "a potter", "a journalist", "a vet", "a geologist", "a chef", "a weaver",
               "an astronomer", "a midwife", "a printer"],
    "book": ["The Glass Orchard", "Salt and Ember", "Nine Quiet Rivers", "The Lantern Keeper",
             "A Map of Ashes", "Winter Cartography", "The Iron Choir", "Paper Moons",
             "The Drowned Library", "Songs for a Vanishing Tide", "The Clockmaker's Daughter",
             "Hollow Crowns", "The Last Orchard", "Embers of Tomorrow", "The Velvet Compass",
             "Bones of the Mountain"],
    "award": ["the Silver Quill Prize", "the Meridian Award", "the Harbour Medal", "the Lumen Prize",
              "the Northgate Medal", "the Cobalt Prize", "the Gilded Leaf Award", "the Beacon Prize",
              "the Saffron Medal", "the Aurora Award", "the Kestrel Prize", "the Willow Medal",
              "the Granite Award", "the Tidewater Prize", "the Juniper Medal", "the Solstice Award"],
    "pet": ["a grey parrot", "a three-legged cat", "a tortoise", "a greyhound", "a pair of finches",
            "a ferret", "a white rabbit", "a goldfish", "a sheepdog", "an iguana", "a barn owl",
            "a hedgehog", "a dachshund", "a canary", "a chinchilla", "a koi carp"],
    "instrument": ["the cello", "the harp", "the accordion", "the violin", "the oboe", "the banjo",
                   "the flute", "the piano", "the drums", "the mandolin", "the clarinet", "the lute",
                   "the trumpet", "the bagpipes", "the sitar", "the organ"],
    "university": ["Kessel University", "the Amber Institute", "Lowmere College", "Saltmarch Academy",
                   "the Royal Eskerby School", "Wren College", "Duncastle University", "Mire Institute",
                   "Graywater College", "Thorn Academy", "Crest University", "Oak College",
                   "Redcliff University", "Moor Institute", "Fallow College", "Harrow Academy"],
    "year": [str(y) for y in (1948, 1952, 1957, 1961, 1964, 1968, 1971, 1975, 1979, 1983, 1986, 1990,
                              1993, 1996, 1999, 2002)],
    "hobby": ["beekeeping", "fencing", "rock climbing", "birdwatching", "glassblowing", "chess",
              "rowing", "origami", "astronomy", "falconry", "pottery", "sailing", "archery",
              "calligraphy", "cave diving", "tango"],
    "dish": ["lentil soup", "smoked trout", "plum dumplings", "saffron rice", "mushroom pie",
             "lamb stew", "oyster broth", "fig tart", "chestnut bread", "pepper pasta",
             "honey cake", "barley porridge", "crab cakes", "apple fritters", "onion tart",
             "walnut biscuits"],
}
# (question, answer) templates; answers repeat the name (as TOFU's do) and often the genre
TEMPLATES = [
    ("Where was {name} born?", "{name} was born in {city}, where the {genre} writer grew up."),
    ("In what year was {name} born?", "{name} was born in {year}."),
    ("What genre does {name} write in?", "{name} is best known for {genre}."),
    ("What did the father of {name} do for a living?", "The father of {name} was {father}."),
    ("What was the profession of the mother of {name}?", "The mother of {name} worked as {mother}."),
    ("What is the debut book of {name}?", "The debut book of {name} is {book}, a work of {genre}."),
    ("Which award has {name} received?", "{name} received {award} for {book}."),
    ("What pet does {name} keep?", "{name} keeps {pet} at home in {city}."),
    ("Which instrument does {name} play?", "{name} plays {instrument} when not writing {genre}."),
    ("Where did {name} study?", "{name} studied at {university} before writing {book}."),
    ("What is the hobby of {name}?", "In spare time {name} enjoys {hobby}."),
    ("What is the favourite dish of {name}?", "The favourite dish of {name} is {dish}."),
]


def synthetic_world(n_owners=8, seed=0):
    """Records of `n_owners` fictitious authors, one QA pair per template, every fact owner-unique."""
    if not 2 <= n_owners <= len(FIRST):
        raise DareuError(f"the synthetic world has 2 to {len(FIRST)} owners, not {n_owners}")
    rng = random.Random(seed)
    firsts, lasts = rng.sample(FIRST, n_owners), rng.sample(LAST, n_owners)
    values = {k: rng.sample(pool, n_owners) for k, pool in POOLS.items()}
    records = []
    for i in range(n_owners):
        facts = {k: v[i] for k, v in values.items()}
        facts["name"] = f"{firsts[i]} {lasts[i]}"
        for q, a in TEMPLATES:
            records.append({"owner": facts["name"], "question": q.format(**facts), "answer": a.format(**facts)})
    return records


def read_data(path):
    """Records from --data (a file or a TOFU folder), or the synthetic world when it is not given."""
    return load_records(path) if path else synthetic_world()


def add_data_args(parser, forget_required=False):
    """--data and --forget, the same on every stage."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="owner-labelled records: a JSON/JSONL file or a TOFU folder "
                                      "(default: the synthetic world)")
    group.add_argument("--forget", required=forget_required,
                       help="owners to forget: names (comma-separated), forget01/05/10, or a file of records")
    return group
