"""The tokenizer's file format (lesson 02): versioned UTF-8 text, one record per line, written
atomically and read back with a message that names the file and the line of any problem.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    pass

__all__ = ["FORMAT_NAME", "FORMAT_VERSION"]


FORMAT_NAME = "minillm-bpe"


FORMAT_VERSION = 1


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _LineReader:
    """Reads a saved tokenizer line by line; every error names the file and the line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a {FORMAT_NAME} file (not UTF-8 text)") from err
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.position = 0
        self.last = ""

    def fail(self, message: str) -> NoReturn:
        raise ValueError(f"{self.path}: line {self.position}: {message}")

    def next_line(self, what: str) -> str:
        if self.position >= len(self.lines):
            self.position += 1
            self.fail(f"file ends early, expected {what} (truncated?)")
        self.last = self.lines[self.position]
        self.position += 1
        return self.last

    def fields(self, what: str, count: int, split_once: bool = False) -> list[str]:
        line = self.next_line(what)
        parts = line.split(" ", 1) if split_once else line.split(" ")
        if len(parts) != count:
            self.fail(f"expected {what} ({count} fields), got {line!r}")
        return parts

    def integer(self, field: str, what: str) -> int:
        try:
            return int(field)
        except ValueError:
            self.fail(f"{what} {field!r} is not an integer")

    def json_value(self, key: str, kind: type):
        fields = self.fields(f"'{key} <json>'", 2, split_once=True)
        if fields[0] != key:
            self.fail(f"expected '{key} ...', got {self.last!r}")
        try:
            value = json.loads(fields[1])
        except json.JSONDecodeError:
            self.fail(f"{key} is not valid JSON: {fields[1]!r}")
        if not isinstance(value, kind):
            self.fail(f"{key} must be a JSON {kind.__name__}")
        return value

    def section(self, key: str, count: int, split_once: bool = False) -> list[list[str]]:
        header = self.fields(f"'{key} <count>'", 2)
        if header[0] != key:
            self.fail(f"expected the '{key} <count>' line, got {self.last!r}")
        n = self.integer(header[1], f"{key} count")
        return [self.fields(f"a {key} entry", count, split_once) for _ in range(n)]

    def expect_end(self) -> None:
        if self.position < len(self.lines):
            self.position += 1
            self.fail(f"unexpected extra content {self.lines[self.position - 1]!r}")


def read_tokenizer_file(
    path: Path,
) -> tuple[str, str, dict[bytes, int], list[tuple[int, ...]], dict[str, int]]:
    """The fields of a tokenizer file: (name, pattern, ranks, merges, specials), unchecked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a minillm tokenizer, corrupt (the message names the file and the line),
            or a newer format version than this minillm reads.
    """
    reader = _LineReader(path)
    header = reader.fields("header", 2)
    if header[0] != FORMAT_NAME:
        reader.fail(f"not a {FORMAT_NAME} file (first line {reader.last!r})")
    version = reader.integer(header[1], "format version")
    if version > FORMAT_VERSION:
        reader.fail(
            f"format version {version} is newer than this minillm reads "
            f"(up to {FORMAT_VERSION}); upgrade minillm"
        )
    if version < 1:
        reader.fail(f"invalid format version {version}")
    name = reader.json_value("name", str)
    pattern = reader.json_value("pattern", str)
    ranks: dict[bytes, int] = {}
    for fields in reader.section("tokens", 2):
        try:
            token = bytes.fromhex(fields[1])
        except ValueError:
            reader.fail(f"token bytes {fields[1]!r} are not hexadecimal")
        token_id = reader.integer(fields[0], "token id")
        if token in ranks:
            raise ValueError(
                f"{path}: invalid tokenizer: ids {ranks[token]} and {token_id} share the "
                f"bytes {fields[1]!r}"
            )
        ranks[token] = token_id
    merges = [
        tuple(reader.integer(f, "merge id") for f in fields)
        for fields in reader.section("merges", 3)
    ]
    specials: dict[str, int] = {}
    for fields in reader.section("specials", 2, split_once=True):
        try:
            text = json.loads(fields[1])
        except json.JSONDecodeError:
            reader.fail(f"special token {fields[1]!r} is not a JSON string")
        if not isinstance(text, str) or text in specials:
            reader.fail(f"special token {fields[1]!r} is not a new JSON string")
        specials[text] = reader.integer(fields[0], "special id")
    reader.expect_end()
    return name, pattern, ranks, merges, specials
