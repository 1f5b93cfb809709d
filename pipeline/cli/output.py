"""The consoles the CLI prints on, suited to where the output goes and safe for what it prints.

On a terminal, rich lays out at the terminal's width. Anywhere else (a CI log, a pipe, a file) rich
would fall back to 80 columns and fold every longer line and table cell, one letter per line in a
narrow column; there, nothing is wrapped: lines keep their length and a table takes the width of its
content.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

# Wide enough that no table or line we print is ever folded; a table still takes only the width of
# its content (tables are not expanded).
UNWRAPPED_WIDTH = 100_000


class OutputConsole(Console):
    """A rich Console that does not wrap when it is not writing to a terminal. Whether it is, is
    decided at each print (the CLI's stdout can be a pipe in one process and a terminal in another)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("log_path", False)  # a log line never carries the source file that printed it
        # What the CLI prints quotes tags, paths, server bodies and reasons: a plain string is never read
        # as markup ("[/x]" would raise), its ":name:" never becomes an emoji, nothing is recoloured;
        # styling is explicit, with `Text` and styles.
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self._width is not None:
            return size
        return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
