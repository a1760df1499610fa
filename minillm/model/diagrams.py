"""Block diagrams for lessons 03 (attention) and 04 (the GPT), drawn with matplotlib.

They ship in the package so a lesson draws them wherever it runs (a wheel installed in Colab, the
notebook alone in a folder). matplotlib is an optional extra (``pip install "minillm[course]"``), so
it is imported inside the functions that draw. Every figure is about 7 inches wide with fonts of at
least 9 points, so it stays legible at book width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["attention_diagram", "block_diagram", "multihead_reshape_diagram"]

FONT = 10
BLUE, ORANGE, GREEN, GREY, PURPLE = "#dbe9f6", "#fde7c8", "#dff2d8", "#eeeeee", "#e8dcf3"


def _matplotlib() -> Any:
    """matplotlib's pyplot, or a one-line error naming the extra that installs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            'the lesson diagrams need matplotlib: pip install "minillm[course]"'
        ) from None
    return plt


def _box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    colour: str = BLUE,
    size: float = FONT,
) -> None:
    """A rounded box centred on (x, y)."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.04",
            facecolor=colour,
            edgecolor="#444",
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    text: str = "",
    style: str = "->",
) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": style, "lw": 1.3})
    if text:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(middle[0], middle[1] + 0.12, text, ha="center", va="bottom", fontsize=9)


def _canvas(
    width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float], title: str
) -> tuple[Figure, Axes]:
    fig, ax = _matplotlib().subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    return fig, ax


def attention_diagram() -> Figure:
    r"""Scaled dot-product attention: X -> Q, K, V -> softmax(QK^T / sqrt(d_k) + M) V."""
    fig, ax = _canvas(
        7.4,
        3.4,
        (0, 14.8),
        (0, 6.4),
        "Scaled dot-product attention of one head (shapes without the batch)",
    )
    _box(ax, 1.0, 3.2, 1.6, 1.0, "$X$\n(T, C)", GREY)
    for y, name in [(5.2, "Q"), (3.2, "K"), (1.2, "V")]:
        _box(ax, 3.8, y, 2.0, 1.0, f"${name} = XW_{name.lower()}$\n(T, $d_k$)", BLUE)
        _arrow(ax, (1.8, 3.2), (2.8, y))
    _box(ax, 6.9, 4.2, 2.3, 1.1, "$S = QK^\\top / \\sqrt{d_k}$\n(T, T)", ORANGE)
    _arrow(ax, (4.8, 5.2), (5.75, 4.45))
    _arrow(ax, (4.8, 3.2), (5.75, 3.95))
    _box(ax, 9.5, 4.2, 1.9, 1.1, "$S + M$\ncausal mask", ORANGE)
    _arrow(ax, (8.05, 4.2), (8.55, 4.2))
    _box(ax, 9.5, 2.2, 1.9, 1.1, "softmax\nper row: $P$", GREEN)
    _arrow(ax, (9.5, 3.65), (9.5, 2.75))
    _box(ax, 12.4, 2.2, 2.3, 1.1, "$PV$\n(T, $d_k$)", PURPLE)
    _arrow(ax, (10.45, 2.2), (11.25, 2.2))
    _arrow(ax, (4.8, 1.2), (11.25, 1.9))
    ax.text(
        12.4,
        4.6,
        "$M_{ij} = 0$ if $j \\leq i$\n$M_{ij} = -\\infty$ if $j > i$",
        ha="center",
        va="center",
        fontsize=9.5,
    )
    fig.tight_layout()
    return fig


def _grid(
    ax: Axes, x: float, y: float, cols: int, rows: int, cell: float, colours: list[str], label: str
) -> None:
    """A rows × cols block of cells with its lower-left corner at (x, y); colour by column."""
    from matplotlib.patches import Rectangle

    for r in range(rows):
        for c in range(cols):
            ax.add_patch(
                Rectangle(
                    (x + c * cell, y + r * cell),
                    cell,
                    cell,
                    facecolor=colours[c % len(colours)],
                    edgecolor="#666",
                    lw=0.6,
                )
            )
    ax.text(x + cols * cell / 2, y - 0.35, label, ha="center", va="top", fontsize=9.5)


def multihead_reshape_diagram(n_head: int = 4, d_head: int = 2, T: int = 4) -> Figure:
    """(B, T, C) -> view (B, T, h, d) -> transpose (B, h, T, d): the head becomes a batch axis."""
    head_colours = ["#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2", "#c7e9c0"]
    per_column = [head_colours[c // d_head] for c in range(n_head * d_head)]
    fig, ax = _canvas(
        7.4, 3.2, (0, 15.5), (-1.0, 4.4), "Multi-head attention is a reshape: one colour per head"
    )
    cell = 0.45
    _grid(
        ax,
        0.3,
        1.0,
        n_head * d_head,
        T,
        cell,
        per_column,
        "(B, T, C)\nrows: tokens, columns: C = h·d",
    )
    _arrow(ax, (4.1, 1.9), (5.2, 1.9), ".view")
    for h in range(n_head):  # (T, h, d): each token row split into h groups of d
        _grid(ax, 5.4 + h * (d_head * cell + 0.12), 1.0, d_head, T, cell, [head_colours[h]], "")
    ax.text(
        5.4 + n_head * (d_head * cell + 0.12) / 2,
        0.65,
        "(B, T, h, d)\nsame memory, h groups",
        ha="center",
        va="top",
        fontsize=9.5,
    )
    _arrow(ax, (9.6, 1.9), (11.0, 1.9))
    ax.text(10.3, 2.05, ".transpose\n(1, 2)", ha="center", va="bottom", fontsize=9)
    for h in reversed(range(n_head)):  # (h, T, d): one (T, d) matrix per head, stacked
        _grid(ax, 11.4 + h * 0.55, 0.8 + h * 0.42, d_head, T, cell, [head_colours[h]], "")
    ax.text(
        12.6, 0.45, "(B, h, T, d)\none (T, d) matrix per head", ha="center", va="top", fontsize=9.5
    )
    fig.tight_layout()
    return fig


def block_diagram() -> Figure:
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); then the GPT."""
    fig, ax = _canvas(
        7.4, 4.6, (0, 15), (0, 9.4), "A pre-norm transformer block (left) inside the GPT (right)"
    )
    x_stream = 2.2  # the residual stream runs straight up this column
    _box(ax, x_stream, 0.6, 1.8, 0.8, "$x$ (B, T, C)", GREY)
    ax.plot([x_stream, x_stream], [1.0, 8.5], color="#444", lw=1.3)
    for y0, norm, branch, colour in [
        (1.9, "norm", "attention", ORANGE),
        (5.4, "norm", "MLP", GREEN),
    ]:
        _box(ax, 5.0, y0 + 0.3, 1.9, 0.75, norm, BLUE)
        _box(ax, 5.0, y0 + 1.55, 1.9, 0.8, branch, colour)
        ax.plot([x_stream, 5.0], [y0 - 0.55, y0 - 0.55], color="#444", lw=1.3)  # branch off
        _arrow(ax, (5.0, y0 - 0.55), (5.0, y0 - 0.12))
        _arrow(ax, (5.0, y0 + 0.68), (5.0, y0 + 1.15))
        ax.add_patch(
            _matplotlib().Circle((x_stream, y0 + 2.4), 0.28, facecolor="white", edgecolor="#444")
        )
        ax.text(x_stream, y0 + 2.4, "+", ha="center", va="center", fontsize=12)
        _arrow(ax, (5.0, y0 + 1.95), (5.0, y0 + 2.4), style="-")
        _arrow(ax, (5.0, y0 + 2.4), (x_stream + 0.28, y0 + 2.4))
    ax.annotate(
        "", xy=(x_stream, 8.9), xytext=(x_stream, 8.5), arrowprops={"arrowstyle": "->", "lw": 1.3}
    )
    ax.text(x_stream + 0.2, 8.7, "to the next block", ha="left", va="bottom", fontsize=9.5)
    ax.text(0.15, 4.45, "residual\nstream", ha="left", va="center", fontsize=9.5, rotation=90)
    # The whole model, as a stack.
    gx = 11.5
    stack = [
        (0.7, "token ids (B, T)", GREY),
        (1.9, "token embedding\n(+ positions)", BLUE),
        (3.5, "block 1", PURPLE),
        (4.6, "...", "white"),
        (5.7, "block n_layer", PURPLE),
        (6.9, "final norm", BLUE),
        (8.1, "output layer → logits\n(B, T, vocab)", GREY),
    ]
    for y, text, colour in stack:
        _box(ax, gx, y, 3.6, 0.75 if "\n" not in text else 0.95, text, colour)
    for (y_a, _, _), (y_b, _, _) in zip(stack[:-1], stack[1:], strict=True):
        _arrow(ax, (gx, y_a + 0.45), (gx, y_b - 0.45))
    ax.plot([6.4, 9.6], [4.4, 3.5], color="#999", lw=1, ls="--")
    fig.tight_layout()
    return fig
