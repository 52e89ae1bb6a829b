"""Owner-labelled data: loading, the forget/retain split, the synthetic default world, tokenising.

Every stage of dareu reads records {"owner", "question", "answer"}. They come from
  - a JSON array or a JSON Lines file of such records, or
  - a TOFU folder (the layout of shared/data/tofu): `full.json` is 200 blocks of 20 QA pairs, one block
    per fictitious author, so owner = row index // 20 (SPEC §9), or
  - `synthetic_world()`, the embedded default: fictitious owners with owner-unique facts.
`--forget` names the owners to forget: owner names (comma-separated), a split name forget01/05/10
(the last 1/5/10 % of owners, as in TOFU), or a file of records (its owners are forgotten).

This file also holds what every stage shares: the command-line plumbing (one-line errors, config
fields checked when a config is built, SIGINT/SIGTERM handling), the two tokenising helpers (a
question becomes a prompt the same way in SFT, rollout, distillation and evaluation), the atomic
writers for outputs, and checkpoints (save, resume, random states).

    python data.py --data ../shared/data/tofu --forget forget10    # prints the split
"""
import argparse
import contextlib
import json
import math
import os
import pickle
import random
import shlex
import shutil
import signal
import sys
import tempfile

import torch


class DareuError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a run."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT / SIGTERM handling for the whole run (installed by run_cli). By default a signal raises
    Interrupted at once, so staging folders are cleaned up. Inside `with SIGNALS.deferred():` (a training
    loop) the first signal is only recorded in `received`: the loop finishes its step, writes a checkpoint
    and raises Interrupted itself; a second signal abandons the step at once. `resume` = (checkpoint
    folder, command) lets run_cli say how to continue."""

    def __init__(self):
        self.received, self.defer, self.resume = None, False, None

    def handle(self, signum, frame):
        first = self.received is None
        self.received = signum
        if not (self.defer and first):
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        self.defer = True
        try:
            yield
        finally:
            self.defer = False
        if self.received:   # it came after the loop's last look
            raise Interrupted(self.received)


SIGNALS = Signals()


def run_cli(main):
    """Run a stage's main(); turn DareuError into `error: ...` on stderr and exit status 2, and a
    SIGINT / SIGTERM into one line saying how to resume and exit status 130 / 143 (128 + signal)."""
    SIGNALS.received, SIGNALS.resume = None, None
    handlers = {s: signal.signal(s, SIGNALS.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        main()
    except DareuError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        folder, command = SIGNALS.resume or (None, None)
        print(f"interrupted by {signal.Signals(e.signum).name}; "
              + (f"resume with: {command}" if folder and checkpoints(folder) else "no checkpoint to resume from"),
              file=sys.stderr)
        sys.exit(128 + e.signum)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def add_config_args(parser, config_class):
    """One --flag per field of a config dataclass (its default; bools take true/false)."""
    for name, field in config_class.__dataclass_fields__.items():
        kind = type(field.default)
        parser.add_argument("--" + name.replace("_", "-"), default=field.default, metavar=kind.__name__.upper(),
                            type=(lambda s: s.lower() in ("1", "true", "yes")) if kind is bool else kind)


def config_from_args(config_class, args):
    """The config from parsed flags; its __post_init__ checks every field (check_fields)."""
    return config_class(**{name: getattr(args, name) for name in config_class.__dataclass_fields__})


RULES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "<= 0": lambda v: v <= 0,
         "in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1}


def check_fields(cfg, **rules):
    """Refuse the first field of `cfg` (a config, or parsed flags) that breaks its rule: a key of RULES
    (floats must also be finite), or a tuple of the allowed values. Called when a config is built."""
    for name, rule in rules.items():
        value, flag = getattr(cfg, name), "--" + name.replace("_", "-")
        if isinstance(rule, tuple):
            if value not in rule:
                raise DareuError(f"{flag} {value!r}: choose from {', '.join(rule)}")
        elif (isinstance(value, float) and not math.isfinite(value)) or not RULES[rule](value):
            raise DareuError(f"{flag} must be {rule}, not {value!r}")


def check_device(device):
    """Refuse a device this machine does not have."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise DareuError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if kind.type == "cuda" and (kind.index or 0) >= torch.cuda.device_count():
        raise DareuError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise DareuError(f"--device {device}: MPS is not available on this machine")
    if kind.type not in ("cpu", "cuda", "mps"):
        raise DareuError(f"--device {device}: only cpu, cuda and mps are supported")


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


# ----------------------------------------------------------------------------------------------
# 4. Tokenising: one prompt format for every stage

# Prompt templates (SPEC §8). Numbers are comparable only in the format a model was trained on.
#   chat       the model's own chat template, no system prompt, thinking off (Qwen3); a tokenizer
#              without one gets the plain "Question: q\nAnswer:" + " a" format. The default.
#   ou-chat    open-unlearning's chat format (Llama-3, Qwen2.5): the chat template with the system
#              prompt "You are a helpful assistant." and a pinned date (never today's).
#   ou-llama2  open-unlearning's Llama-2 TOFU format: plain tags "[INST] q [/INST]", no system prompt.
#   ou-qa      open-unlearning's base-model format: "Question: q\nAnswer: ".
# In the ou-* formats the answer is tokenized together with its prompt, as open-unlearning builds
# its labels (so a Llama-2 answer starts with the token "The", not "▁The"), and EOS is appended
# when the text does not already end with it. The template travels with the tokenizer: it is kept
# in tokenizer_config.json (key dareu_template), so a model fine-tuned in a format keeps it.
PROMPT_TEMPLATES = {
    "chat": {},
    "ou-chat": {"system": "You are a helpful assistant.", "date_string": "10 Apr 2025"},
    "ou-llama2": {"user_start": "[INST] ", "user_end": " [/INST]", "asst_start": ""},
    "ou-qa": {"user_start": "Question: ", "user_end": "\n", "asst_start": "Answer: "},
}


def set_template(tokenizer, name):
    """Use template `name` for every prompt this tokenizer builds (and save it with the tokenizer)."""
    if name not in PROMPT_TEMPLATES:
        raise DareuError(f"unknown template {name!r}; choose from {', '.join(PROMPT_TEMPLATES)}")
    if name == "ou-chat" and not tokenizer.chat_template:
        raise DareuError(f"template {name} needs a tokenizer with a chat template")
    tokenizer.init_kwargs["dareu_template"] = name


def template_of(tokenizer):
    return tokenizer.init_kwargs.get("dareu_template", "chat")


def chat_ids(tokenizer, messages, **kwargs):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, enable_thinking=False,
                                              **kwargs))


def qa_ids(tokenizer, question, answer=None):
    """(ids, n_prompt): the token ids of a question and its answer in the tokenizer's template, and
    how many of them are the prompt; the answer part ends with EOS (the model must learn to stop).
    With no answer, the prompt alone, for generation."""
    name, t = template_of(tokenizer), PROMPT_TEMPLATES[template_of(tokenizer)]
    eos = tokenizer.eos_token_id
    if name == "chat":
        if tokenizer.chat_template:
            prompt = chat_ids(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True)
            text = answer
        else:
            prompt = tokenizer(f"Question: {question}\nAnswer:").input_ids
            text = None if answer is None else " " + answer
        if answer is None:
            return prompt, len(prompt)
        return prompt + tokenizer(text, add_special_tokens=False).input_ids + [eos], len(prompt)
    # open-unlearning: tokenize the prompt, and the prompt with its answer; the answer is what
    # follows the prompt's length (where the two tokenizations disagree at the border, as they do
    # for "Answer: " + "The", the joint one wins, as in open-unlearning)
    if name == "ou-chat":
        chat = [{"role": "system", "content": t["system"]}, {"role": "user", "content": question}]
        prompt = chat_ids(tokenizer, chat, add_generation_prompt=True, date_string=t["date_string"])
        if answer is None:
            return prompt, len(prompt)
        full = chat_ids(tokenizer, chat + [{"role": "assistant", "content": answer}], date_string=t["date_string"])
    else:
        wrapped = t["user_start"] + question + t["user_end"] + t["asst_start"]
        prompt = tokenizer(wrapped).input_ids
        if answer is None:
            return prompt, len(prompt)
        full = tokenizer(wrapped + answer).input_ids
    return (full if full[-1] == eos else full + [eos]), len(prompt)


def prompt_ids(tokenizer, question):
    """Token ids of the prompt for `question` in the tokenizer's template (see PROMPT_TEMPLATES)."""
    return qa_ids(tokenizer, question)[0]


def left_pad(sequences, pad_id):
    """Left-pad lists of ids into (input_ids, attention_mask) tensors [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def encode_prompts(tokenizer, questions, max_prompt_tokens=256):
    """Left-padded prompts [B, P] for generation (keeps the last max_prompt_tokens of each)."""
    return left_pad([prompt_ids(tokenizer, q)[-max_prompt_tokens:] for q in questions], tokenizer.pad_token_id)


def encode_qa(tokenizer, questions, answers, max_tokens=512):
    """Left-padded prompt+answer sequences for teacher forcing.
    Returns input_ids, attention_mask and answer_mask [B, T]: answer_mask[t] = 1 where token t is an
    answer token (so it is predicted from position t-1); prompt and pad positions are 0."""
    seqs, n_answer = [], []
    for q, a in zip(questions, answers):
        ids, n_prompt = qa_ids(tokenizer, q, a)
        s = ids[-max_tokens:]
        seqs.append(s)
        n_answer.append(min(len(ids) - n_prompt, len(s) - 1))
    ids, mask = left_pad(seqs, tokenizer.pad_token_id)
    answer_mask = torch.zeros_like(mask)
    for i, n in enumerate(n_answer):
        answer_mask[i, ids.shape[1] - n:] = 1
    return ids, mask, answer_mask


# ----------------------------------------------------------------------------------------------
# 5. Outputs: written whole or not at all

def check_out_path(out, inputs, is_file=False):
    """Refuse an output that is one of the inputs (or holds / sits inside one), or of the other kind
    than what is there already (a file where a folder is written, or a folder where a file is)."""
    if os.path.exists(out) and os.path.isdir(out) == is_file:
        raise DareuError(f"--out {out} is an existing {'folder' if is_file else 'file'}; give a "
                         f"{'file' if is_file else 'folder'} path")
    out_real = os.path.realpath(out)
    for name, path in inputs.items():
        if path and os.path.exists(path):
            p = os.path.realpath(path)
            if out_real == p or p.startswith(out_real + os.sep) or out_real.startswith(p + os.sep):
                raise DareuError(f"--out {out} would overwrite the input {name} {path}; choose another folder")


def staging_dir(out):
    """A fresh folder beside `out`, to fill and then move into place with publish()."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)


def publish(stage, out):
    """Move a finished staging folder to `out`, replacing an earlier output there."""
    if os.path.exists(out):
        old = stage + ".old"
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)


def write_json(path, obj):
    """Write JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def write_jsonl(path, records):
    """Write records as JSON Lines atomically (temp file + rename)."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(f"{path}.tmp", path)


# ----------------------------------------------------------------------------------------------
# 6. Checkpoints: the resumable state of a long run, in <out>.checkpoints/step-NNNNNN/

def checkpoint_dir(out):
    return os.path.normpath(out) + ".checkpoints"


def checkpoints(folder):
    """The complete checkpoints in `folder`, oldest first."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith("step-") and os.path.isfile(os.path.join(folder, n, "state.pt")))


def save_checkpoint(folder, step, state, args, keep):
    """Write `state` (tensors, numbers, strings; see load_state) and the run's arguments to
    folder/step-NNNNNN atomically, then delete all but the last `keep` checkpoints. Returns its path."""
    path = os.path.join(folder, f"step-{step:06d}")
    stage = staging_dir(path)
    try:
        torch.save(state, os.path.join(stage, "state.pt"))
        write_json(os.path.join(stage, "args.json"), args)
        publish(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old)
    return path


def resume_from(path, args, may_change):
    """The checkpoint to resume: `path` itself, or the last one in the folder `path`. Refuses a run
    whose arguments differ from the interrupted run's in anything but `may_change`."""
    found = [path] if os.path.isfile(os.path.join(path, "state.pt")) else checkpoints(path)
    if not found:
        raise DareuError(f"--resume {path}: no checkpoint there")
    try:
        with open(os.path.join(found[-1], "args.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise DareuError(f"--resume {found[-1]}: unreadable args.json ({e})") from None
    for name, value in args.items():
        if name not in may_change and saved.get(name) != value:
            raise DareuError(f"--resume: --{name.replace('_', '-')} was {saved.get(name)!r} in the interrupted run, "
                             f"not {value!r}; resume with the same arguments")
    return found[-1]


def checkpointing(script, argv, args, may_change):
    """Set up checkpoints for a run writing args.out: returns (checkpoint folder, the checkpoint to resume
    from or None). Checks --resume against the interrupted run's arguments, refuses to start afresh over an
    interrupted run's checkpoints, and tells run_cli how to resume after a signal."""
    folder = checkpoint_dir(args.out)
    resume = resume_from(args.resume, vars(args), may_change) if args.resume else None
    if not resume and checkpoints(folder):
        raise DareuError(f"{folder} holds the checkpoints of an interrupted run: continue it with "
                         f"--resume {folder}, or delete that folder")
    SIGNALS.resume = (folder, resume_command(script, argv, folder))
    return folder, resume


def load_state(checkpoint):
    """A checkpoint's state, loaded with weights_only=True (tensors and plain data only: no code runs)."""
    try:
        return torch.load(os.path.join(checkpoint, "state.pt"), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise DareuError(f"cannot load the checkpoint {checkpoint}: {str(e).splitlines()[0]}") from None


def resume_command(script, argv, folder):
    """The command that continues a run: its arguments (from argv or sys.argv) plus --resume folder."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume" in argv:
        del argv[argv.index("--resume"):argv.index("--resume") + 2]
    return shlex.join(["python", script, *[a for a in argv if not a.startswith("--resume=")], "--resume", folder])


def rng_state(rng, generator=None):
    """Every random state a run draws from: torch (CPU and CUDA), a random.Random, a torch.Generator."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": rng.getstate(), "generator": generator.get_state() if generator is not None else None}


def set_rng_state(state, rng, generator=None):
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    rng.setstate(state["python"])
    if generator is not None:
        generator.set_state(state["generator"])


def main():
    p = argparse.ArgumentParser(description="Load owner-labelled data and show the forget/retain split.")
    p.add_argument("--data", help="JSON/JSONL records or a TOFU folder (default: the synthetic world)")
    p.add_argument("--forget", help="owner names (comma-separated), forget01/05/10, or a file of records")
    p.add_argument("--owners", help="keep only these owners (comma-separated), e.g. to try a few TOFU authors")
    p.add_argument("--write", help="write the records (JSONL) to this file")
    args = p.parse_args()
    records = load_records(args.data) if args.data else synthetic_world()
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
