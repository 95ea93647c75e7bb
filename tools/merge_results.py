#!/usr/bin/python3
"""Merges the results logs of fpn_detect's shards into one COCO results file and one images file,
byte for byte what one fpn_detect process over all the images writes with --json.

  /usr/bin/python3 tools/merge_results.py --json all.json shard_0.jsonl ... shard_{N-1}.jsonl

Each log is one shard's --resume file (fpn_detect --shard K/N --resume shard_K.jsonl ...). The
outputs are all.json (the COCO results, in image_id order) and all.images.json (the "images"
section of a COCO annotation file: id, file_name, height, width), or --images PATH; both are
written to a temporary file and renamed, so a refused merge leaves no output.

Refused, with a message naming the file and what is wrong (exit status 1):
  - logs of different runs: their headers differ in inputs, weights, arch or options;
  - a shard given twice, shards of different N, or a shard of 0..N-1 missing;
  - an image in a log twice, or in the wrong shard's log;
  - gaps: images of the input list that no log holds, as when a shard was killed and not resumed
    (a torn last line, left by a kill mid-write, counts as not there).
Images that fpn_detect could not read are left out of both outputs, as fpn_detect leaves them
out, and listed; the exit status is then 1 (as fpn_detect's), after the outputs are written.

Standard library only. Numbers are copied as fpn_detect wrote them, never re-formatted.
"""
import argparse
import array
import json
import os
import sys
import tempfile

FORMAT = "fpn_detect results log 1"
SHOWN = 10  # ids listed in a message before "..."


class MergeError(Exception):
    pass


class Number(str):
    """A JSON number kept as its text, so that the output has fpn_detect's digits exactly."""


def dump(value):
    """Compact JSON as nlohmann::json::dump() writes it (no spaces, UTF-8 as is)."""
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + dump(item)
                              for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def parse(line):
    return json.loads(line, parse_float=Number, parse_int=Number)


def id_list(ids):
    ids = sorted(ids)
    text = ", ".join(str(i) for i in ids[:SHOWN])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN else "")


class ShardLog:
    """One log: its header, and then its images' lines."""

    def __init__(self, path):
        self.path = path
        self.failed = set()  # image_ids whose only lines are failures (fpn_detect retries those)
        try:
            self.file = open(path, "rb")
        except OSError as error:
            raise MergeError(f"cannot read results log '{path}': {error.strerror}"
                             " (did its shard run?)") from None
        first = self.file.readline()
        if not first.endswith(b"\n"):
            raise MergeError(f"'{path}' has no complete header line: its shard was killed "
                             "before it began; run it again")
        try:
            self.header = json.loads(first)
        except ValueError:
            self.header = None
        if not isinstance(self.header, dict) or self.header.get("format") != FORMAT:
            raise MergeError(f"'{path}' is not an fpn_detect results log (fpn_detect --resume)")
        try:
            index, count = (int(part) for part in self.header["shard"].split("/"))
            self.count = int(self.header["inputs"]["count"])
        except (KeyError, ValueError, AttributeError):
            raise MergeError(f"'{path}': its header has no shard K/N or input count") from None
        self.shard = (index, count)

    def read_images(self, number_of_log, owner, offsets):
        """Marks each image it holds: owner[image_id] = number_of_log, offsets[image_id] = where
        its line starts (a successful line wins over failures before it)."""
        index, count = self.shard
        offset = self.file.tell()
        number = 1
        for line in self.file:
            number += 1
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write: fpn_detect cuts it off when it resumes
            where = f"'{self.path}' line {number}"
            try:
                record = json.loads(line)
                image_id = record["image_id"]
            except (ValueError, KeyError, TypeError):
                raise MergeError(f"{where} is not an image record") from None
            if not isinstance(image_id, int) or not 0 <= image_id < self.count \
                    or image_id % count != index:
                raise MergeError(f"{where}: image_id {image_id} is not an image of shard "
                                 f"{index}/{count} of {self.count} images")
            if "error" in record:
                if owner[image_id] < 0:
                    self.failed.add(image_id)
                continue
            if owner[image_id] >= 0:
                raise MergeError(f"{where}: image {image_id} ({record.get('file_name')}) is in "
                                 "the log twice")
            self.failed.discard(image_id)
            owner[image_id] = number_of_log
            offsets[image_id] = start

    def record(self, offset):
        self.file.seek(offset)
        return parse(self.file.readline())


def check_same_run(logs):
    first = logs[0]
    for log in logs[1:]:
        keys = [key for key in {**first.header, **log.header}
                if key != "shard" and first.header.get(key) != log.header.get(key)]
        if keys:
            key = keys[0]
            raise MergeError(
                f"'{first.path}' and '{log.path}' are shards of different runs: their \"{key}\" "
                f"is {json.dumps(first.header.get(key))} and {json.dumps(log.header.get(key))}"
                " (every shard must run the same inputs, weights and options)")
    counts = {log.shard[1] for log in logs}
    if len(counts) > 1:
        raise MergeError("the logs are of different shard counts: " +
                         ", ".join(f"'{log.path}' is {log.header['shard']}" for log in logs))
    count = counts.pop()
    seen = {}
    for log in logs:
        if log.shard in seen:
            raise MergeError(f"shard {log.header['shard']} is given twice: '{seen[log.shard]}' "
                             f"and '{log.path}'")
        seen[log.shard] = log.path
    missing = [f"{index}/{count}" for index in range(count) if (index, count) not in seen]
    if missing:
        raise MergeError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of "
                         f"{count} {'are' if len(missing) > 1 else 'is'} missing: give every "
                         "shard's results log")


def write_atomically(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def merge(log_paths, json_path, images_path):
    logs = [ShardLog(path) for path in log_paths]
    check_same_run(logs)
    total = logs[0].count
    # Two flat arrays rather than a dict per log: ten million images take 100 MB, not gigabytes.
    owner = array.array("i", [-1]) * total  # image_id -> index of the log holding its results
    offsets = array.array("q", [0]) * total  # image_id -> where its line starts in that log
    failed = set()
    for number, log in enumerate(logs):
        log.read_images(number, owner, offsets)
        failed |= log.failed
    gaps = [image_id for image_id in range(total) if owner[image_id] < 0 and image_id not in failed]
    if gaps:
        shards = sorted({f"{image_id % logs[0].shard[1]}/{logs[0].shard[1]}" for image_id in gaps})
        raise MergeError(f"{len(gaps)} of {total} images are in no log (ids {id_list(gaps)}): "
                         f"shard{'s' if len(shards) > 1 else ''} {', '.join(shards)} did not "
                         "finish; run them again with the same --resume file, then merge")
    results = []
    images = []
    for image_id in range(total):
        if owner[image_id] < 0:
            continue
        record = logs[owner[image_id]].record(offsets[image_id])
        results.extend(dump(entry) for entry in record["results"])
        images.append({"id": int(image_id), "file_name": record["file_name"],
                       "height": int(record["height"]), "width": int(record["width"])})
    # fpn_detect's layout: one entry a line; the images as nlohmann's dump(1).
    write_atomically(images_path, json.dumps(images, indent=1, ensure_ascii=False) + "\n")
    write_atomically(json_path, "[\n" + ",\n".join(results) + "\n]\n" if results else "[]\n")
    return total, len(results), sorted(failed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="the merged COCO results file to write")
    parser.add_argument("--images", help="the merged images file (default: NAME.images.json "
                        "beside --json NAME.json, as fpn_detect names it)")
    parser.add_argument("logs", nargs="+", metavar="LOG.jsonl",
                        help="every shard's results log (fpn_detect --resume)")
    args = parser.parse_args(argv)
    images_path = args.images or os.path.splitext(args.json)[0] + ".images.json"
    try:
        total, entries, failed = merge(args.logs, args.json, images_path)
    except MergeError as error:
        print(f"merge_results: {error}", file=sys.stderr)
        return 1
    print(f"merged {len(args.logs)} shards: {total - len(failed)} images, {entries} detections "
          f"-> {args.json}, {images_path}")
    if failed:
        print(f"merge_results: {len(failed)} images could not be read (left out, as fpn_detect "
              f"leaves them out): ids {id_list(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
