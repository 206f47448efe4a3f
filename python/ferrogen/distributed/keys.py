"""Row keys and row seeds: what makes a distributed row sample as if it were generated alone."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

# Position columns the readers attach; with `file` they key rows that have no key column.
POSITIONS = ("line", "row")

NO_KEY = (
    "key_column: rows have no key, and sampling (do_sample=True) needs one per row to seed it; pass "
    "key_column= (e.g. an id column) or number the rows with ferrogen.distributed.read_jsonl, read_parquet "
    "or from_prompts (greedy and beam search need no key)"
)


def row_key(row: dict[str, Any], key_column: Optional[str] = None, prompt_column: str = "prompt") -> str:
    """The text a row's seed is derived from: ``key_column``'s value when given, else the row's
    file, position (``line`` or ``row``) and prompt. Raises ``ValueError`` when neither exists.

    >>> row_key({"file": "a.jsonl", "line": 3, "prompt": "Jesus wept"})
    '["a.jsonl", 3, "Jesus wept"]'
    >>> row_key({"id": "q7", "prompt": "x"}, key_column="id")
    '"q7"'
    """
    if key_column is not None:
        return json.dumps(plain(row[key_column]), sort_keys=True, default=str)
    for position in POSITIONS:
        if position in row:
            return json.dumps([row.get("file"), plain(row[position]), plain(row.get(prompt_column))], default=str)
    raise ValueError(NO_KEY)


def row_seed(seed: int, key: str) -> int:
    """A row's sampling seed in [0, 2**64): BLAKE2b of the global seed and the row key (stable
    across processes and machines, unlike ``hash()``).

    >>> row_seed(7, '"q7"') == row_seed(7, '"q7"') != row_seed(8, '"q7"')
    True
    """
    digest = hashlib.blake2b(f"{int(seed)}\x00{key}".encode(), digest_size=8, person=b"ferrogen-row").digest()
    return int.from_bytes(digest, "little")


def plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (so keys and JSON do not depend on the batch format)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value

