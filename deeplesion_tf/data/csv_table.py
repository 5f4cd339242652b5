"""Where a CSV file enters: decoded, its delimiter found, every row parsed or reported.

Both CSV sources (`bookmarks.csv` of a PACS export, the release's `DL_info.csv`)
read their files here, so that one odd export (a spreadsheet's byte-order mark,
semicolons, a NUL byte, a row with a stray comma) gives the same result in both:
the file is refused as a whole only when no row of it can be trusted (it is not
text in a known encoding, it has no header); any other fault is one row's, and
the reader yields it as that row's error for the caller to count.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from etils import epath

# Delimiters recognised in the header line; ties go to the first.
DELIMITERS = (",", ";", "\t")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class Row(NamedTuple):
    """One data row of a table.

    Attributes:
      number: the data row, counting from 1 (the header and blank lines are not counted).
      line: the line of the file where the row starts, counting from 1.
      record: column name -> raw cell text, or None when the row cannot be parsed.
      error: why the row cannot be parsed (it names the line), or None.
    """

    number: int
    line: int
    record: Optional[Dict[str, str]]
    error: Optional[str]


def _decode(data: bytes, path: str) -> Tuple[str, str]:
    """`(text, encoding)`: UTF-8 with or without a BOM, or UTF-16 with one."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, codec, body = "utf-16", "utf-16", data
    elif data.startswith(codecs.BOM_UTF8):
        # Decoded past the BOM so that an error's offset is the body's.
        encoding, codec, body = "utf-8-sig", "utf-8", data[len(codecs.BOM_UTF8):]
    else:
        encoding, codec, body = "utf-8-sig", "utf-8", data
    try:
        return body.decode(codec), encoding
    except UnicodeDecodeError as e:
        before = _LINE_BREAK.split(body[:e.start].decode(codec, "replace"))
        after = _LINE_BREAK.split(body[e.start:].decode(codec, "replace"), maxsplit=1)[0]
        shown = " ".join(f"0x{b:02x}" for b in body[e.start:min(e.end, e.start + 4)])
        raise ValueError(
            f"{path} line {len(before)}: byte(s) {shown} are not {codec.upper()} (in "
            f"{(before[-1] + after)[:60]!r}); save the file as UTF-8 (a Latin-1 or "
            "Windows-1252 export must be converted)") from None


def _delimiter(header_line: str) -> str:
    counts = [header_line.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))]


@dataclasses.dataclass(frozen=True)
class Table:
    """A decoded CSV file: its columns, and its data rows on demand (`rows()`).

    Attributes:
      path: the file, as given (for messages).
      columns: header names, whitespace stripped.
      delimiter: `,`, `;` or a tab, found in the header line.
      encoding: `utf-8-sig` (UTF-8, a BOM or not) or `utf-16` (with a BOM).
    """

    path: str
    columns: Tuple[str, ...]
    delimiter: str
    encoding: str
    text: str = dataclasses.field(repr=False)

    def missing(self, required: Sequence[str]) -> List[str]:
        """The `required` columns that the header lacks, in `required`'s order."""
        return [c for c in required if c not in self.columns]

    def rows(self) -> Iterator[Row]:
        """Every data row in file order; a row that cannot be parsed comes with its error.

        Never raises for one row's content: a `csv.Error` (a field above
        `csv.field_size_limit()`), a NUL character, or another number of fields
        than the header has becomes that row's `error`. Blank lines are skipped,
        as `csv.DictReader` skips them.
        """
        reader = csv.reader(io.StringIO(self.text, newline=""), delimiter=self.delimiter)
        width = len(self.columns)
        number, end, header_seen = 0, 0, False
        while True:
            start = end + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                end = reader.line_num
                number += 1
                yield Row(number, start, None, f"{_lines(start, end)}: {e}")
                continue
            end = reader.line_num
            if not fields:
                continue
            if not header_seen:
                header_seen = True
                continue
            number += 1
            where = _lines(start, end)
            if any("\x00" in f for f in fields):
                yield Row(number, start, None, f"{where}: contains a NUL character")
            elif len(fields) != width:
                yield Row(number, start, None,
                          f"{where}: has {len(fields)} fields; the header has {width}")
            else:
                yield Row(number, start, dict(zip(self.columns, fields)), None)


def _lines(start: int, end: int) -> str:
    return f"line {start}" if end <= start else f"lines {start}-{end}"


def read(path: epath.PathLike) -> Table:
    """Reads and decodes a CSV file and parses its header line.

    Args:
      path: a local path or any `epath`-readable URL (`gs://...`).

    Returns:
      The `Table`; its rows are parsed as they are iterated.

    Raises:
      OSError: the file cannot be read.
      ValueError: the file is not UTF-8 (with or without a BOM) nor UTF-16 with a
        BOM, or its header is empty, holds a NUL character (UTF-16 without a
        BOM) or names a column twice; the message names the file and the line.
    """
    shown = str(path)
    text, encoding = _decode(epath.Path(path).read_bytes(), shown)
    lines = _LINE_BREAK.split(text)
    index = next((i for i, line in enumerate(lines) if line), None)
    if index is None:
        raise ValueError(f"{shown}: empty file, no header line")
    where = f"{shown} line {index + 1}"
    if "\x00" in lines[index]:
        raise ValueError(f"{where}: NUL characters in the header; is it UTF-16 without a "
                         "byte-order mark? Save the file as UTF-8")
    delimiter = _delimiter(lines[index])
    try:
        header = next((f for f in csv.reader(io.StringIO(text, newline=""),
                                             delimiter=delimiter) if f), [])
    except csv.Error as e:
        raise ValueError(f"{where}: the header does not parse: {e}") from None
    columns = tuple(name.strip() for name in header)
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"{where}: the header names {repeated} more than once")
    return Table(shown, columns, delimiter, encoding, text)
