"""A run's `flags.txt`: the binary's own flags, resolved, as a flagfile that repeats the run.

`FLAGS.flags_into_string()` writes every flag registered in the process (absl's
testing flags, TensorFlow's, TFDS's, `--help` ...), and such a file fails to parse in a
fresh process of the binary ("Unknown command line flag 'test_random_seed'"). Here
only the flags the binary's module defines go in, each with its resolved value (what
a `--flagfile` given to the run set included), one per line; a flag whose value is
None (unset, no default) is left out, so that the replay leaves it unset too.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import flags


def own_flags(module_name: Optional[str] = None,
              flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """The flagfile text of `module_name`'s flags (default: the running binary's)."""
    module_name = module_name or sys.argv[0]
    lines = [flag.serialize() for flag in sorted(
        flag_values.get_key_flags_for_module(module_name), key=lambda f: f.name)]
    return "".join(f"{line}\n" for line in lines if line)


def write_flags_file(directory: str, module_name: Optional[str] = None,
                     flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """Writes `directory/flags.txt` (`own_flags`); returns its path."""
    path = os.path.join(directory, "flags.txt")
    with open(path, "w") as f:
        f.write(own_flags(module_name, flag_values))
    return path
