"""Users absent from training, each described by the items they interacted with (served by fold-in)."""

from __future__ import annotations

import csv
from pathlib import Path

from fitmm.errors import InputError


def read_new_users(path: str | Path) -> dict[str, list[str]]:
    """Each user's items from a CSV with the columns ``user_id`` and ``item_id`` (any others are
    ignored), one interaction per row; users in the order they first appear."""
    path = Path(path)
    users: dict[str, list[str]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"user_id", "item_id"} - set(reader.fieldnames or ())
            if missing:
                raise InputError(f"{path}: the header needs the columns user_id and item_id "
                                 f"(missing {', '.join(sorted(missing))})")
            for row in reader:
                user, item = (row.get("user_id") or "").strip(), (row.get("item_id") or "").strip()
                if not user or not item:
                    raise InputError(f"{path}, line {reader.line_num}: empty user_id or item_id")
                users.setdefault(user, []).append(item)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except csv.Error as error:
        raise InputError(f"{path}: not a readable CSV file ({error})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    if not users:
        raise InputError(f"{path}: no rows")
    return users
