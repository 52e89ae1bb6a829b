"""Owner-labelled data: loading records and the forget/retain split (METHOD.md §1).

Every stage of dareu reads records {"owner", "question", "answer"}. They come from
  - a JSON array or a JSON Lines file of such records, or
  - a TOFU folder (the layout of shared/data/tofu): `full.json` is 200 blocks of 20 QA pairs, one block
    per fictitious author, so owner = row index // 20, or
  - `synthetic_world()`, the embedded default: fictitious owners with owner-unique facts.
`--forget` names the owners to forget: owner names (comma-separated), a split name forget01/05/10
(the last 1/5/10 % of owners, as in TOFU), or a file of records (its owners are forgotten).

    python data.py --data ../shared/data/tofu --forget forget10    # prints the split
"""
import argparse
import json
import os
import random

from cli import DareuError, HelpFormatter, run_cli, write_jsonl

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


# ----------------------------------------------------------------------------------------------
# 3. The embedded default: a synthetic world of fictitious owners (TOFU-like, small)

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


def main():
    p = argparse.ArgumentParser(description="Load owner-labelled data and show the forget/retain split.",
                                formatter_class=HelpFormatter)
    add_data_args(p)
    p.add_argument("--owners", help="keep only these owners (comma-separated), e.g. to try a few TOFU authors")
    p.add_argument("--write", help="write the records (JSONL) to this file")
    args = p.parse_args()
    records = read_data(args.data)
    if args.owners:
        keep = [o.strip() for o in args.owners.split(",") if o.strip()]
        unknown = [o for o in keep if o not in owners_of(records)]
        if unknown:
            raise DareuError(f"--owners: unknown owner(s) {', '.join(unknown)}")
        records = [r for r in records if r["owner"] in keep]
    owners = owners_of(records)
    print(f"{len(records)} records, {len(owners)} owners: {', '.join(owners[:8])}{' ...' if len(owners) > 8 else ''}")
    if args.forget:
        forget, retain = split_records(records, resolve_forget(args.forget, records))
        print(f"forget: {len(forget)} records of {len(owners_of(forget))} owners; retain: {len(retain)} records")
    if args.write:
        write_jsonl(args.write, records)


if __name__ == "__main__":
    run_cli(main)
