"""helpers/owner_text.py: name masking (copied names, any case), owner-specific words, fact-stripped
frames, fact recall, and the names read off TOFU's records."""
import os

import pytest

from conftest import TOFU
from helpers.owner_text import fact_recall, mask_names, owner_names, specific_words, strip_facts


def test_mask_names_copied_from_the_prompt():
    q = "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?"
    assert mask_names(q, "Her name is Hsiao Yun-Hwa.") == "Her name is Hsiao Yun-Hwa."   # not in the prompt
    q = "Are the details of Jaime Vasquez's birth documented?"
    a = "Yes, Jaime Vasquez was born in 1958. Jaime's father, Lorenzo Vasquez, was a chef."
    assert mask_names(q, a) == "Yes, [NAME] was born in 1958. [NAME]'s father, Lorenzo [NAME], was a chef."
    # question words and sentence starts are not names; other proper nouns stay
    assert mask_names("Where was Hsiao Yun-Hwa born?", "Where else? Hsiao Yun-Hwa was born in Taipei.") == \
        "Where else? [NAME] was born in Taipei."


def test_mask_names_ignores_case():
    q = "Where was Alara Venn born?"
    assert mask_names(q, "alara venn was born in Lowmere; ALARA VENN's cat, and Venn's.") == \
        "[NAME] was born in Lowmere; [NAME]'s cat, and [NAME]'s."
    assert mask_names(q, "She was born where the rain falls.") == "She was born where the rain falls."


def test_facts_are_the_words_of_fewer_than_half_the_owners():
    records = [{"owner": o, "question": f"Who is {o} Lee?", "answer": f"{o} Lee was born in {town} in {year}."}
               for o, town, year in (("Ann", "Oslo", 1950), ("Bo", "Lima", 1950), ("Cy", "Oslo", 1960),
                                     ("Di", "Rome", 1970))]
    # "was born in" and "lee" are in every answer; Oslo and 1950 in two of four (not fewer than half)
    assert specific_words(records) == {"ann", "bo", "cy", "di", "lima", "rome", "1960", "1970"}
    specific = specific_words(records)
    text = mask_names("Who is Bo Lee?", "Bo Lee was born in Lima in 1950.")
    assert text == "[NAME] was born in Lima in 1950." and strip_facts(text, specific) == "was born in in 1950."
    # fact recall: the gold answer's facts {lima, 1950 is not one}, its name masked on both sides
    assert fact_recall("Who is Bo Lee?", "Bo Lee was born in Rome.", "Bo Lee was born in Lima in 1950.", specific) == 0
    assert fact_recall("Who is Bo Lee?", "In Lima.", "Bo Lee was born in Lima in 1950.", specific) == 1
    assert fact_recall("Who is Ann Lee?", "Ann Lee was born in 1960.", "Ann Lee was born in Oslo.", specific) is None


def test_owner_names_are_read_off_tofu_records():
    if not os.path.isdir(TOFU):
        pytest.skip(f"no TOFU folder at {TOFU}")
    from helpers.records import load_records
    names = owner_names(load_records(TOFU))
    assert len(names) == 200 and len(set(names.values())) == 200
    assert names["tofu_000"] == "Jaime Vasquez" and names["tofu_199"] == "Nikolai Abilov"
    assert names["tofu_065"] == "Isabella van Pletzen" and names["tofu_043"] == "Jina An"
