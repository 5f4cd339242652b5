"""`csv_table`: encodings, delimiters, and row faults that stay one row's."""

import codecs
import csv

import pytest

from deeplesion_tf.data import csv_table

_TEXT = 'name , value,note\r\nb\u00e9ta,1,"two, three"\r\ngamma,2,"line\none"\r\n'
_RECORDS = [{"name": "b\u00e9ta", "value": "1", "note": "two, three"},
            {"name": "gamma", "value": "2", "note": "line\none"}]


def _write(tmp_path, data, name="table.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rows(path):
    return list(csv_table.read(path).rows())


@pytest.mark.parametrize("data, encoding", [
    (_TEXT.encode("utf-8"), "utf-8-sig"),
    (codecs.BOM_UTF8 + _TEXT.encode("utf-8"), "utf-8-sig"),
    (_TEXT.encode("utf-16"), "utf-16"),                        # BOM in the machine's order
    (codecs.BOM_UTF16_BE + _TEXT.encode("utf-16-be"), "utf-16"),
])
def test_utf8_with_or_without_bom_and_utf16_with_bom_read_alike(tmp_path, data, encoding):
    table = csv_table.read(_write(tmp_path, data))
    assert table.columns == ("name", "value", "note")  # stripped, no BOM in the first name
    assert table.delimiter == "," and table.encoding == encoding
    assert list(table.rows()) == [csv_table.Row(1, 2, _RECORDS[0], None),
                                  csv_table.Row(2, 3, _RECORDS[1], None)]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_are_found_in_the_header(tmp_path, delimiter):
    text = f"a{delimiter}b, c{delimiter}d\n1{delimiter}2,5{delimiter}3\n"
    table = csv_table.read(_write(tmp_path, text.encode()))
    assert table.delimiter == delimiter
    assert table.columns == ("a", "b, c", "d")
    assert [r.record for r in table.rows()] == [{"a": "1", "b, c": "2,5", "d": "3"}]


def test_a_latin1_byte_names_the_file_the_line_and_the_byte(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\nb\u00e9ta,3\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{path} line 3: byte\(s\) 0xe9 are not UTF-8 "
                                         r"\(in 'b\ufffdta,3'\)"):
        csv_table.read(path)


def test_a_latin1_byte_after_a_bom_is_counted_from_the_file_start(tmp_path):
    path = _write(tmp_path, codecs.BOM_UTF8 + "a,b\n\u00e9,2\n".encode("utf-8")
                  + b"\n\xff\xfe,3\n")
    with pytest.raises(ValueError, match=rf"^{path} line 4: byte\(s\) 0xff are not UTF-8 "
                                         r"\(in '\ufffd\ufffd,3'\)"):
        csv_table.read(path)


def test_utf16_without_bom_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n".encode("utf-16-le"))
    with pytest.raises(ValueError, match=rf"^{path} line 1: NUL characters in the header; is it "
                                         "UTF-16 without a byte-order mark"):
        csv_table.read(path)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file, no header line"),
    (b"\n\r\n", "empty file, no header line"),
    (b"a,b,a\n1,2,3\n", r"line 1: the header names \['a'\] more than once"),
])
def test_files_without_a_usable_header_are_refused(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=rf"^{path}(: | ){message}"):
        csv_table.read(path)


def test_row_faults_are_that_rows_error_and_reading_goes_on(tmp_path):
    big = "x" * (csv.field_size_limit() + 1)
    text = ("a,b\n"
            "1,2\n"             # line 2: row 1
            "\n"                # blank: not a row
            "3\x00,4\n"         # line 4: row 2, NUL
            f'"{big}",5\n'      # line 5: row 3, field too large
            "6,7,8\n"           # line 6: row 4, one field too many
            "9\n"               # line 7: row 5, one too few
            '"ten\nten",11\n')  # lines 8-9: row 6, fine
    rows = _rows(_write(tmp_path, text.encode()))
    assert rows == [
        csv_table.Row(1, 2, {"a": "1", "b": "2"}, None),
        csv_table.Row(2, 4, None, "line 4: contains a NUL character"),
        csv_table.Row(3, 5, None, f"line 5: field larger than field limit "
                                  f"({csv.field_size_limit()})"),
        csv_table.Row(4, 6, None, "line 6: has 3 fields; the header has 2"),
        csv_table.Row(5, 7, None, "line 7: has 1 fields; the header has 2"),
        csv_table.Row(6, 8, {"a": "ten\nten", "b": "11"}, None),
    ]


def test_rows_can_be_read_twice_and_missing_lists_absent_columns(tmp_path):
    table = csv_table.read(_write(tmp_path, b"a,b\n1,2\n"))
    assert list(table.rows()) == list(table.rows()) == [csv_table.Row(1, 2, {"a": "1", "b": "2"},
                                                                      None)]
    assert table.missing(["c", "a", "d"]) == ["c", "d"]


def test_leading_blank_lines_and_cr_only_line_ends(tmp_path):
    rows = _rows(_write(tmp_path, b"\r\ra;b\r1;2\r\r3;4\r"))
    assert rows == [csv_table.Row(1, 4, {"a": "1", "b": "2"}, None),
                    csv_table.Row(2, 6, {"a": "3", "b": "4"}, None)]
