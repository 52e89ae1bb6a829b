"""Owner-labelled data, seen from the command line: how many records and owners, the forget/retain
split of --forget, and a selection of owners written as JSON Lines (helpers/records.py reads them).

    python data.py --data ../shared/data/tofu --forget forget10    # prints the split
    python data.py --data ../shared/data/tofu --owners tofu_000,tofu_199 --write tofu2.jsonl
"""
import argparse

from helpers.cli import DareuError, HelpFormatter, run_cli, write_jsonl
from helpers.records import add_data_args, owners_of, read_data, resolve_forget, split_records


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
