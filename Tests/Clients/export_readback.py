#!/usr/bin/env python3
"""Reads an alignd training export back with Hugging Face `datasets` and checks it against TRL.

    python export_readback.py --format FORMAT FILE [--min-rows N] [--chunksize BYTES]

FILE is JSONL as `alignctl feedback export --format FORMAT` writes it. It is loaded the way a TRL
user loads it, `datasets.load_dataset("json", data_files=FILE, split="train")` (offline, with a
throw-away cache), and every row is checked against the TRL dataset type of FORMAT:

    trl        standard preference         prompt, chosen, rejected: str
    trl-chat   conversational preference   prompt: messages; chosen, rejected: [one assistant message]
    kto        standard unpaired pref.     prompt: str, completion: str, label: bool
    kto-chat   conversational unpaired     prompt: messages, completion: [one assistant message], label: bool
    sft        standard prompt-completion  prompt: str, completion: str
    sft-chat   conversational LM           messages: messages, the last one from the assistant
    rollouts   on-policy rollouts          prompt: str, messages: messages or null, completion: str,
                                           completion_id: str, prompt_token_ids: [int],
                                           completion_token_ids: [int], completion_logprobs: [float]
                                           (as long as completion_token_ids, or empty), reward: float
                                           or null, finish_reason: str, policy_version: str

"messages" is a non-empty list of {"role": system|user|assistant, "content": str}. Any other column
must hold strings (or be null / absent in a row), e.g. policy_version, completion_id, feedback_type.
Each row must also be (or, for the standard formats, must not be) conversational the way TRL's
`is_conversational` sees it: a prompt/chosen/rejected/completion/messages value that is a list
whose first item is a dict with a "role" key.

Prints one JSON object on stdout: {"rows", "columns", "features", "first", "trl_conversational"}.
Exit status: 0 valid, 1 invalid (each problem on stderr, naming the 1-based row and the field;
row N is line N of a file without blank lines), 2 usage error (bad arguments, unreadable file).
--chunksize sets the loader's chunk size (default 10 MiB); a small one makes a small file load in
several chunks the way a large export does, whose column types come from its first chunk.
"""

import argparse
import json
import math
import os
import sys
import tempfile

FORMATS = ("trl", "trl-chat", "kto", "kto-chat", "sft", "sft-chat", "rollouts")
ROLES = ("system", "user", "assistant")
# The keys TRL's is_conversational looks at.
TRL_KEYS = ("prompt", "chosen", "rejected", "completion", "messages")
MAX_ERRORS = 50


def usage_error(parser, message):
    parser.print_usage(sys.stderr)
    print(f"export_readback: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    parser = argparse.ArgumentParser(
        prog="export_readback",
        description="Load an alignd JSONL export with datasets' JSON loader and check it against TRL.",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="export format")
    parser.add_argument("file", metavar="FILE", help="JSONL file written by alignctl feedback export")
    parser.add_argument("--min-rows", type=int, default=1, metavar="N", help="fewest rows accepted (default 1)")
    parser.add_argument("--all-rows", action="store_true", help="also print every row as loaded (key \"all\")")
    parser.add_argument("--chunksize", type=int, default=None, metavar="BYTES",
                        help="datasets JSON loader chunk size (default: the loader's 10 MiB)")
    args = parser.parse_args()
    if args.min_rows < 0:
        usage_error(parser, "--min-rows must be 0 or more")
    if args.chunksize is not None and args.chunksize <= 0:
        usage_error(parser, "--chunksize must be positive")
    if not os.path.isfile(args.file):
        usage_error(parser, f"no such file: {args.file}")
    if not os.access(args.file, os.R_OK):
        usage_error(parser, f"cannot read {args.file}")
    return args


# ---------------------------------------------------------------------------------------------
# Checks. Each returns None when the value is fine, else a message (without the row/field prefix).

def type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def check_str(value):
    if not isinstance(value, str):
        return f"expected a string, got {type_name(value)}"
    return None


def check_bool(value):
    if not isinstance(value, bool):
        return f"expected a bool (true/false), got {type_name(value)} {json.dumps(value, default=str)}"
    return None


def check_float(value):
    if isinstance(value, bool) or not isinstance(value, float):
        return f"expected a float, got {type_name(value)}"
    if not math.isfinite(value):
        return f"expected a finite float, got {value}"
    return None


def check_int_list(value):
    if not isinstance(value, list):
        return f"expected a list of int, got {type_name(value)}"
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            return f"item {i}: expected an int, got {type_name(item)}"
    return None


def check_float_list(value):
    if not isinstance(value, list):
        return f"expected a list of float, got {type_name(value)}"
    for i, item in enumerate(value):
        problem = check_float(item)
        if problem:
            return f"item {i}: {problem}"
    return None


def check_message(message, index):
    if not isinstance(message, dict):
        return f"message {index}: expected an object with role and content, got {type_name(message)}"
    if message.get("role") is None:
        return f"message {index}: missing \"role\""
    if message["role"] not in ROLES:
        return f"message {index}: role {json.dumps(message['role'], default=str)} is not one of {'/'.join(ROLES)}"
    if message.get("content") is None:
        return f"message {index}: missing \"content\""
    if not isinstance(message["content"], str):
        return f"message {index}: content: expected a string, got {type_name(message['content'])}"
    # A struct column unifies the keys of all rows (absent ones read back as null), so only a
    # non-null extra key is an error.
    extra = sorted(k for k, v in message.items() if k not in ("role", "content") and v is not None)
    if extra:
        return f"message {index}: unexpected key(s) {', '.join(extra)}"
    return None


def check_messages(value):
    if not isinstance(value, list):
        return f"expected a list of messages, got {type_name(value)}"
    if not value:
        return "expected at least one message, got an empty list"
    for i, message in enumerate(value):
        problem = check_message(message, i)
        if problem:
            return problem
    return None


def check_one_assistant_message(value):
    if not isinstance(value, list):
        return f"expected a list of one assistant message, got {type_name(value)}"
    if len(value) != 1:
        return f"expected exactly one assistant message, got {len(value)}"
    problem = check_message(value[0], 0)
    if problem:
        return problem
    if value[0]["role"] != "assistant":
        return f"message 0: expected role \"assistant\", got {json.dumps(value[0]['role'])}"
    return None


def check_chat_ending_with_assistant(value):
    problem = check_messages(value)
    if problem:
        return problem
    if value[-1]["role"] != "assistant":
        return f"the last message must have role \"assistant\", got {json.dumps(value[-1]['role'])}"
    return None


def nullable(check):
    def inner(value):
        return None if value is None else check(value)
    return inner


# FORMAT -> ({field: check}, conversational?) ; conversational is True / False, or None for rollouts
# (a standard prompt beside an optional conversational messages column).
SCHEMAS = {
    "trl": ({"prompt": check_str, "chosen": check_str, "rejected": check_str}, False),
    "trl-chat": ({"prompt": check_messages, "chosen": check_one_assistant_message,
                  "rejected": check_one_assistant_message}, True),
    "kto": ({"prompt": check_str, "completion": check_str, "label": check_bool}, False),
    "kto-chat": ({"prompt": check_messages, "completion": check_one_assistant_message,
                  "label": check_bool}, True),
    "sft": ({"prompt": check_str, "completion": check_str}, False),
    "sft-chat": ({"messages": check_chat_ending_with_assistant}, True),
    "rollouts": ({"prompt": check_str, "messages": nullable(check_messages), "completion": check_str,
                  "completion_id": check_str, "prompt_token_ids": nullable(check_int_list),
                  "completion_token_ids": check_int_list, "completion_logprobs": check_float_list,
                  "reward": nullable(check_float), "finish_reason": check_str,
                  "policy_version": check_str}, None),
}
# The columns trainers read; in a row of a format that does not have them, they are a mistake.
TRAINER_COLUMNS = {"prompt", "chosen", "rejected", "completion", "label", "messages"}
OPTIONAL_FIELDS = {"rollouts": {"messages", "reward", "prompt_token_ids"}}


def trl_key_is_conversational(value):
    """TRL's is_conversational for one key: a list whose first item is a dict with "role"."""
    return isinstance(value, list) and len(value) > 0 and isinstance(value[0], dict) and "role" in value[0]


def check_row(fmt, row):
    """Returns a list of (field, message) problems of one row."""
    fields, conversational = SCHEMAS[fmt]
    optional = OPTIONAL_FIELDS.get(fmt, set())
    problems = []
    for field, check in fields.items():
        value = row.get(field)
        if value is None and field not in optional:
            problems.append((field, "missing or null"))
            continue
        problem = check(value)
        if problem:
            problems.append((field, problem))
    for field, value in row.items():
        if field in fields or value is None:
            continue
        # Another format's trainer column: a trainer of this one would misread the rows (KTO rows
        # loaded for SFT would train on the bad completions too).
        if field in TRAINER_COLUMNS:
            problems.append((field, f"column {field} belongs to another format than {fmt}"))
        # Provenance columns (versions, ids, feedback type, times, flags): scalars a trainer ignores.
        elif not isinstance(value, (str, bool, int, float)):
            problems.append((field, f"extra column must be a scalar, got {type_name(value)}"))
    # TRL's view. It looks at one (arbitrary) key of TRL_KEYS present in the row; every one of
    # them must agree for the row to be read the same whichever it picks.
    if conversational is not None:
        for key in TRL_KEYS:
            if row.get(key) is None:
                continue
            if trl_key_is_conversational(row[key]) != conversational:
                want = "conversational" if conversational else "standard (not conversational)"
                problems.append((key, f"TRL's is_conversational would not read this as {want}"))
    else:  # rollouts: the prompt is standard text; messages, when present, conversational.
        if row.get("prompt") is not None and trl_key_is_conversational(row["prompt"]):
            problems.append(("prompt", "TRL would read this prompt as conversational; expected text"))
        if row.get("messages") is not None and not trl_key_is_conversational(row["messages"]):
            problems.append(("messages", "TRL's is_conversational would not read this as conversational"))
    # rollouts: logprobs go with the completion tokens, or are absent ([]).
    if fmt == "rollouts":
        logprobs, tokens = row.get("completion_logprobs"), row.get("completion_token_ids")
        if isinstance(logprobs, list) and isinstance(tokens, list) and logprobs and len(logprobs) != len(tokens):
            problems.append(("completion_logprobs",
                             f"{len(logprobs)} logprobs for {len(tokens)} completion tokens "
                             "(must be equal, or no logprobs at all)"))
    return problems


def check_features(fmt, features):
    """Column types the loader inferred that would break a larger export or a trainer."""
    problems = []
    if fmt == "rollouts":
        wanted = {
            "reward": ("Value('float64')", "Value('null')"),
            "completion_logprobs": ("List(Value('float64'))", "List(Value('null'))"),
            "prompt_token_ids": ("List(Value('int64'))",),
            "completion_token_ids": ("List(Value('int64'))", "List(Value('null'))"),
        }
        for column, accepted in wanted.items():
            if column in features and repr(features[column]) not in accepted:
                hint = ""
                if "float64" in accepted[0] and "int64" in repr(features[column]):
                    # Integers in the first 10 MiB chunk fix the column as int64, and a later
                    # chunk's 0.5 then fails to load.
                    hint = " (write floats with a fraction digit, e.g. 1.0, never 1)"
                problems.append((column, f"column type {features[column]!r}, expected {accepted[0]}{hint}"))
    return problems


def trl_conversational_summary(rows):
    verdicts = set()
    for row in rows:
        keys = [key for key in TRL_KEYS if row.get(key) is not None]
        verdicts.update(trl_key_is_conversational(row[key]) for key in keys)
    if verdicts == {True}:
        return True
    if verdicts == {False}:
        return False
    return "mixed" if verdicts else None


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def main():
    args = parse_args()

    with tempfile.TemporaryDirectory(prefix="export-readback-") as tmp:
        # Loading a local file never touches the network, and no cache outside tmp is written.
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HOME"] = os.path.join(tmp, "hf-home")
        os.environ["HF_DATASETS_CACHE"] = os.path.join(tmp, "datasets")
        os.environ.setdefault("TQDM_DISABLE", "1")
        import warnings
        warnings.filterwarnings("ignore")
        try:
            import datasets
        except ImportError as e:
            print(f"export_readback: cannot import datasets ({e}); run it with scripts/test-python-env.sh's python",
                  file=sys.stderr)
            return 2
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # failures are reported below

        with open(args.file, "rb") as f:
            empty = not any(line.strip() for line in f)
        if empty:  # the JSON loader fails on an empty file with a bare StopIteration
            print(json.dumps({"rows": 0, "columns": [], "features": "{}", "first": None,
                              "trl_conversational": None}))
            if args.min_rows > 0:
                print(f"{args.file}: the file is empty (0 rows), expected at least {args.min_rows}",
                      file=sys.stderr)
                return 1
            return 0

        kwargs = {"cache_dir": os.path.join(tmp, "cache")}
        if args.chunksize is not None:
            kwargs["chunksize"] = args.chunksize
        try:
            dataset = datasets.load_dataset("json", data_files=os.path.abspath(args.file), split="train", **kwargs)
        except Exception as e:  # noqa: BLE001 - every loader failure is a finding
            cause = e.__cause__ or e.__context__
            detail = f"{type(e).__name__}: {e}"
            if cause is not None:
                detail += f"\n  caused by {type(cause).__name__}: {cause}"
            print(f"{args.file}: datasets.load_dataset(\"json\") failed: {detail}", file=sys.stderr)
            return 1

        rows = dataset.to_list()
        features = dataset.features
        summary = {
            "rows": len(rows),
            "columns": list(dataset.column_names),
            "features": str(features),
            "first": json_safe(rows[0]) if rows else None,
            "trl_conversational": trl_conversational_summary(rows),
        }
        if args.all_rows:
            summary["all"] = [json_safe(row) for row in rows]

    problems = []
    if len(rows) < args.min_rows:
        problems.append(f"{args.file}: {len(rows)} row(s), expected at least {args.min_rows}")
    for field, message in check_features(args.format, features):
        problems.append(f"{args.file}: column {field}: {message}")
    for index, row in enumerate(rows):
        for field, message in check_row(args.format, row):
            problems.append(f"{args.file}: row {index + 1}: field {field}: {message}")

    print(json.dumps(summary, ensure_ascii=False, default=str))
    if problems:
        for line in problems[:MAX_ERRORS]:
            print(line, file=sys.stderr)
        if len(problems) > MAX_ERRORS:
            print(f"{args.file}: ... and {len(problems) - MAX_ERRORS} more problem(s)", file=sys.stderr)
        print(f"{args.file}: INVALID as --format {args.format} ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
