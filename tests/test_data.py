"""helpers/records.py: loading, the TOFU owner mapping, forget resolution, the synthetic world."""
import json
import os

import pytest

from conftest import TOFU
from helpers.cli import DareuError
from helpers.records import load_records, owners_of, resolve_forget, split_records, synthetic_world

needs_tofu = pytest.mark.skipif(not os.path.isfile(os.path.join(TOFU, "full.json")), reason="TOFU data absent")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@needs_tofu
def test_tofu_owner_is_row_index_div_20():
    records = load_records(TOFU)
    assert len(records) == 4000 and len(owners_of(records)) == 200
    assert records[0]["owner"] == "tofu_000" and records[19]["owner"] == "tofu_000"
    assert records[20]["owner"] == "tofu_001" and records[3999]["owner"] == "tofu_199"
    # the repeated question of `full` belongs to two different authors (keyed by index, not text)
    assert records[100]["question"] == records[440]["question"]
    assert (records[100]["owner"], records[440]["owner"]) == ("tofu_005", "tofu_022")


@needs_tofu
@pytest.mark.parametrize("split,n_authors", [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_tofu_forget_splits_are_the_last_authors(split, n_authors):
    records = load_records(TOFU)
    owners = resolve_forget(split, records)
    assert owners == [f"tofu_{i:03d}" for i in range(200 - n_authors, 200)]
    forget, retain = split_records(records, owners)
    official = read_jsonl(os.path.join(TOFU, f"{split}.json"))
    assert [(r["question"], r["answer"]) for r in forget] == [(r["question"], r["answer"]) for r in official]
    retain_file = read_jsonl(os.path.join(TOFU, f"retain{100 - int(split[-2:])}.json"))
    assert [r["answer"] for r in retain] == [r["answer"] for r in retain_file]


def test_forget_from_names_and_from_a_file(tmp_path):
    records = synthetic_world(n_owners=4)
    owners = owners_of(records)
    assert resolve_forget(f"{owners[1]}, {owners[3]}", records) == [owners[1], owners[3]]
    path = tmp_path / "forget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records if r["owner"] == owners[2]))
    assert resolve_forget(str(path), records) == [owners[2]]


def test_bad_forget_specs_raise_one_line_errors():
    records = synthetic_world(n_owners=4)
    owners = owners_of(records)
    with pytest.raises(DareuError, match="valid owners: " + owners[0]):
        resolve_forget("Nobody Atall", records)
    with pytest.raises(DareuError, match="empty"):
        resolve_forget(" , ", records)
    with pytest.raises(DareuError, match="every owner"):
        resolve_forget(",".join(owners), records)


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"owner": "a", "question": "q?", "answer": "a."})
    path.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DareuError, match="line 3"):
        load_records(str(path))
    path.write_text(json.dumps({"owner": "a", "question": "q?"}) + "\n")
    with pytest.raises(DareuError, match="record 1"):
        load_records(str(path))
    with pytest.raises(DareuError, match="no such file"):
        load_records(str(tmp_path / "missing.jsonl"))


def test_json_array_and_jsonl_read_alike(tmp_path):
    records = synthetic_world(n_owners=2)
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_records(str(tmp_path / "a.json")) == load_records(str(tmp_path / "b.jsonl")) == records


def test_synthetic_world_has_owner_unique_facts():
    records = synthetic_world(n_owners=8, seed=3)
    owners = owners_of(records)
    assert len(owners) == 8
    for owner in owners:
        own = [r for r in records if r["owner"] == owner]
        assert len(own) >= 10 and len({r["question"] for r in own}) == len(own)
    # every answer of one owner differs from every other owner's answer once names are removed
    stripped = {(r["owner"], r["answer"].replace(r["owner"], "")) for r in records}
    assert len({a for _, a in stripped}) == len(records)
    assert synthetic_world(n_owners=8, seed=3) == records and synthetic_world(n_owners=8, seed=4) != records


def test_renamed_copies_swap_the_name_and_keep_the_owner():
    from helpers.records import FIRST, LAST
    from world import renamed_copies
    records = synthetic_world(n_owners=8, seed=0)
    copies = renamed_copies(records, seed=0)
    owners = set(owners_of(records))
    assert len(copies) == len(records) and copies == renamed_copies(records, seed=0)
    names = set()
    for r, c in zip(records, copies):
        [name] = [f"{a} {b}" for a in FIRST for b in LAST if f"{a} {b}" in c["question"]]
        assert name not in owners and c["owner"] == r["owner"]
        assert (c["question"], c["answer"]) == (r["question"].replace(r["owner"], name),
                                                r["answer"].replace(r["owner"], name))
        names.add(name)
    assert len(names) > 50   # many names, so that repeating the question's name is what pays
