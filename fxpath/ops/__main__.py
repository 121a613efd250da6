"""``python -m fxpath.ops [PATH]``: rewrite the generated op table (default ``docs/ops.md``)."""

from __future__ import annotations

import sys
from pathlib import Path

from fxpath.ops import markdown_table

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "ops.md"


def main(argv: list[str]) -> int:
    """Write the table; print where."""
    path = Path(argv[0]) if argv else DEFAULT
    path.write_text(markdown_table())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
