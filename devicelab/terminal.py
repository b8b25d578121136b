"""Tables the CLI prints, readable at any width, on a terminal or in a pipe (README: "Commands").

Rich fits a table that is too wide by cutting cells to "127.0…", and it lays out a pipe at 80 columns (or COLUMNS).
Here no cell is ever cut: a table is drawn only when every word of every cell fits whole in its column and no row
needs more than `MAX_ROW_LINES` lines; otherwise each row becomes a block of "key: value" lines, values wrapped at
spaces. Only a single word wider than the whole line (a long path) is folded onto the next line; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

# Taller rows stop reading as rows (the engines' backend lists ran to 60 lines); a block shows them whole.
MAX_ROW_LINES = 2
_PADDING = 2  # rich's cell padding: a space each side
_INDENT = 2  # a block's "key: value" lines under its first cell; blocks under a title


def print_table(console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]],
                title: str | None = None) -> None:
    """Print `rows` (cells as text, in the order of `columns`) at `console.width`: a table, or one block per row."""
    if title:
        print_wrapped(console, title)
    widths = column_widths(console.width, columns, rows)
    if widths is None:
        # Under a title the blocks step in, so that the title does not read as one more row.
        _print_blocks(console, columns, rows, _INDENT if title else 0)
        return
    wrapped = any(_height(_words(cell), w) > 1 for row in rows for cell, w in zip(row, widths))
    # A row that wraps gets a rule under it, so its second line is not read as another row. Cells are Text: a label
    # like ":b:" or "[base]" is printed as it is, never read as an emoji code or markup.
    table = Table(*(Column(Text(c), width=w, overflow="fold") for c, w in zip(columns, widths)), show_lines=wrapped)
    for row in rows:
        table.add_row(*map(Text, row))
    console.print(table)


def print_wrapped(console: Console, text: str, first: str = "", rest: str | None = None, style: str = "") -> None:
    """`text` wrapped at spaces to the console's width, after `first` on its first line and `rest` (default: as
    many spaces) on the others."""
    rest = " " * cell_len(first) if rest is None else rest
    width = max(1, console.width - max(cell_len(first), cell_len(rest)))
    for i, line in enumerate(Text(text, style=style).wrap(console, width, overflow="fold")):
        line.rstrip()
        console.print(Text(rest if i else first) + line)


def column_widths(width: int, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int] | None:
    """Content widths for a table of `columns` that fits `width` with every word whole and rows of at most
    `MAX_ROW_LINES` lines, or None when there are none (a block per row then).

    From each column's widest line, one column at a time gives up one character: the one whose loss adds the fewest
    lines to the table (the widest of those; the header's lines count half), never below its longest word, until
    the table fits."""
    grid = [[_words(text) for text in row] for row in [columns, *rows]]
    n = len(columns)
    budget = width - (1 + n * (_PADDING + 1))  # a rule left of every column and one at the right edge
    widths = [max(_width(row[i]) for row in grid) for i in range(n)]
    need = [max((word for row in grid for line in row[i] for word in line), default=0) for i in range(n)]
    if sum(need) > budget:
        return None
    known: dict[tuple[int, int, int], int] = {}

    def height(r: int, i: int, w: int) -> int:
        if (r, i, w) not in known:
            known[r, i, w] = _height(grid[r][i], w)
        return known[r, i, w]

    def row_height(r: int, i: int, w: int) -> int:
        """Row r's lines with column i at width w, the other columns as they are."""
        return max(height(r, k, w if k == i else widths[k]) for k in range(n))

    while sum(widths) > budget:
        shrinkable = [i for i in range(n) if widths[i] > need[i]]  # not empty: sum(need) <= budget
        # A header line counts half a row's: a wrapped header costs one line, a wrapped row a line and a rule.
        added = {i: sum((row_height(r, i, widths[i] - 1) - row_height(r, i, widths[i])) * (0.5 if r == 0 else 1)
                        for r in range(len(grid))) for i in shrinkable}
        widths[min(shrinkable, key=lambda i: (added[i], -widths[i]))] -= 1
    if any(height(r, i, widths[i]) > MAX_ROW_LINES for r in range(len(grid)) for i in range(n)):
        return None
    return widths


def _print_blocks(console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]], indent: int) -> None:
    """One block per row: its first cell, then "key: value" for every other non-empty cell, values aligned, and an
    empty line after it."""
    keys = list(columns[1:])
    key_width = max((cell_len(k) for k in keys), default=0) + 1  # and a colon
    value_at = indent + _INDENT + key_width + 1
    longest = max((cell_len(w) for row in rows for value in row[1:] for w in value.split()), default=0)
    # Keys so long that their values would be squeezed into a narrow strip, or a word that would be folded beside
    # the keys but fits under them: each value goes under its key instead.
    below = value_at > console.width // 2 or value_at + longest > console.width >= indent + 2 * _INDENT + longest
    for row in rows:
        print_wrapped(console, row[0] or "—", first=" " * indent, style="bold")
        for key, value in zip(keys, row[1:]):
            if not value.strip():
                continue
            if below:
                print_wrapped(console, f"{key}:", first=" " * (indent + _INDENT))
                print_wrapped(console, value, first=" " * (indent + 2 * _INDENT))
            else:
                print_wrapped(console, value, first=" " * (indent + _INDENT) + f"{key}:".ljust(key_width) + " ")
        console.print()


def _words(text: str) -> list[list[int]]:
    """A cell as lines of word widths."""
    return [[cell_len(word) for word in line.split()] for line in (text.splitlines() or [""])]


def _width(cell: list[list[int]]) -> int:
    """The widest line of a cell given as lines of word widths (words one space apart)."""
    return max((sum(line) + len(line) - 1 for line in cell if line), default=0)


def _height(cell: list[list[int]], width: int) -> int:
    """Lines a cell takes wrapped at spaces to `width`, as rich wraps it (no word is wider than `width` here)."""
    lines = 0
    for line in cell:
        lines += 1
        used = -1
        for word in line:
            if used >= 0 and used + 1 + word > width:
                lines += 1
                used = -1
            used += word + 1
    return lines
