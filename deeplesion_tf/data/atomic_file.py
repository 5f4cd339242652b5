"""Writing a file so that a process killed meanwhile leaves the old file or the new one.

The review page rewrites its files on every answer (`review.json`, `names.csv`,
`purity.json`) and caches its lesion views; `bin/fetch_from_pacs` writes every
instance it retrieves. None of them may be left half written.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Union


def write_atomically(path: str, content: Union[str, bytes], temp_dir: Optional[str] = None
                     ) -> None:
    """Writes `content` to a temporary file, syncs it, then renames it to `path`.

    Args:
      temp_dir: where the temporary file goes (on the same file system as `path`);
        default beside `path`. A process killed by SIGKILL leaves it behind, so a
        writer into a folder that something reads whole (the PACS tree) puts it aside.
    """
    folder = temp_dir or os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
