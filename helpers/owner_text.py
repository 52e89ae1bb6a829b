"""Owner information in a text, read off its words: the names a response copies from its prompt (masked
before a classifier sees them), the words that carry an owner's facts (owner-specific: in the answers
of fewer than half the owners), a text without them, how much of a gold answer's facts a response says,
and the name an owner goes by (for a zero-shot classifier). Pure functions of strings (METHOD.md §2)."""
import json
import re

from helpers.cli import DareuError
from helpers.records import owners_of

MASK = "[NAME]"
# capitalised words that start questions and sentences, not names
NOT_NAMES = {"A", "An", "The", "What", "Who", "Whom", "Whose", "Where", "When", "Which", "Why", "How", "Is",
             "Are", "Was", "Were", "Do", "Does", "Did", "Can", "Could", "Would", "Should", "Has", "Have",
             "Had", "In", "On", "At", "Of", "For", "From", "With", "By", "To", "As", "And", "Or", "But",
             "This", "That", "These", "Those", "It", "Its", "I", "Please", "Tell", "Name", "Describe",
             "Question", "Answer", "Yes", "No"}
WORD = re.compile(r"[^\W\d_][\w'’-]*")
FACT_WORD = re.compile(r"\w[\w'’-]*")   # words and numbers: either can be a fact
# a run of capitalised words, with particles and nicknames inside ("Isabella van Pletzen", "Alejandro (Alex) Fuentes")
NAME_RUN = re.compile(r"[A-Z][\w-]+(?: (?:(?:van|von|de|da|del|der|di|du|la|le|al|el|bin|ibn|\(\w+\)) )*[A-Z][\w-]+)+")



def specific_words(records):
    """Lower-cased answer words that occur in the answers of fewer than half the owners: the words that
    can carry an owner's information."""
    owners_of_word = {}
    for r in records:
        for w in FACT_WORD.findall(r["answer"].lower()):
            owners_of_word.setdefault(w, set()).add(r["owner"])
    n = len({r["owner"] for r in records})
    return {w for w, o in owners_of_word.items() if len(o) < n / 2}


def fact_recall(question, prediction, reference, specific):
    """The share of the gold answer's owner-specific words (names copied from the question masked)
    that the prediction also says; None when the gold answer has none."""
    facts = {w.lower() for w in FACT_WORD.findall(mask_names(question, reference))} & specific
    said = {w.lower() for w in FACT_WORD.findall(mask_names(question, prediction))}
    return len(facts & said) / len(facts) if facts else None


def strip_facts(text, specific):
    """`text` without its owner-specific words (and [NAME]): the generic frame of an answer."""
    kept = FACT_WORD.sub(lambda m: "" if m.group(0).lower() in specific else m.group(0), text.replace(MASK, ""))
    return re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", kept)).strip()


def _name_words(prompt):
    """The proper-noun words of a prompt (capitalised, not a sentence word), lower-cased."""
    return {w.removesuffix("'s").removesuffix("’s").lower() for w in WORD.findall(prompt)
            if w[0].isupper() and w not in NOT_NAMES}


def mask_names(prompt, response):
    """Replace the words of `response` that are proper nouns of `prompt` by [NAME], whatever their case
    ("alara venn" as "Alara Venn"); a run of them ("Hsiao Yun-Hwa") becomes one [NAME]. Possessives keep
    their 's."""
    names = _name_words(prompt)

    def repl(m):
        w = m.group(0)
        for suffix in ("'s", "’s", ""):
            if w.endswith(suffix) and w[:len(w) - len(suffix)].lower() in names:
                return MASK + suffix
        return w
    masked = WORD.sub(repl, response)
    return re.sub(rf"{re.escape(MASK)}(?:[ -]{re.escape(MASK)})+", MASK, masked)


def owner_names(records, names_file=None):
    """owner -> the name a zero-shot classifier should answer. From `names_file` (a JSON object) when
    given; else the owner itself, except TOFU's `tofu_NNN` ids, whose name is read off their records:
    the run of capitalised words (two or more) found in the most of the owner's questions (all 200
    TOFU authors get distinct names this way; pass a file where a heuristic is not good enough)."""
    if names_file:
        with open(names_file, encoding="utf-8") as f:
            names = json.load(f)
        missing = [o for o in owners_of(records) if o not in names]
        if missing:
            raise DareuError(f"{names_file} has no name for owner(s) {', '.join(missing[:5])}")
        return {o: names[o] for o in owners_of(records)}
    names = {}
    for owner in owners_of(records):
        own = [r for r in records if r["owner"] == owner]
        names[owner] = owner if not re.fullmatch(r"tofu_\d+", owner) else (
            _most_common_name([r["question"] for r in own], at_least=3) or
            _most_common_name([r["answer"] for r in own], at_least=1) or owner)
    return names


def _most_common_name(texts, at_least):
    """The run of two or more capitalised words (leading sentence words dropped) found in the most
    texts, if in at least `at_least` of them."""
    counts = {}
    for text in texts:
        for run in set(NAME_RUN.findall(text)):
            words = run.split()
            while words and words[0] in NOT_NAMES:
                words = words[1:]
            if len(words) >= 2:
                counts[" ".join(words)] = counts.get(" ".join(words), 0) + 1
    best = max(counts, key=counts.get, default=None)
    return best if best and counts[best] >= at_least else None
