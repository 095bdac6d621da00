"""The IDS container's first process: write the configuration bundle, then run the supervisor.

Run as `python3 -c <this file's text> <run dir> <bundle env name>` (stack/ids.py): the
bundle (render/ids `bundle()`: relative path -> text, as base64 JSON) arrives in
the environment variable named by the second argument, because uploads would need a writable
root filesystem (stack/common.py) and nothing in it is secret. Every file is written
under the run directory (a tmpfs), then `supervise.py` from there replaces this process.
Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import sys


def main(argv: list[str]) -> None:
    root = pathlib.Path(argv[1])
    files: dict[str, str] = json.loads(base64.b64decode(os.environ[argv[2]]))
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    os.execvp("python3", ["python3", str(root / "supervise.py")])


if __name__ == "__main__":
    main(sys.argv)
