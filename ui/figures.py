"""Figures that show a placeholder with a spinner from the moment their place is known until they are drawn.

``figure_slot(height)`` reserves the figure's height at once with a spinner, to be filled with the figure
(``slot.plotly_chart``) once it is computed. Until Plotly has drawn (its bundle loads, WebGL draws the mesh), the same spinner sits
behind the chart (``placeholder_style``, once per page), so no figure's area is ever blank.
"""

from __future__ import annotations

import streamlit as st

_SPINNER = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='40' height='40' viewBox='0 0 50 50'%3E"
            "%3Ccircle cx='25' cy='25' r='20' fill='none' stroke='%23999' stroke-width='5' stroke-dasharray='90 150'%3E"
            "%3CanimateTransform attributeName='transform' type='rotate' from='0 25 25' to='360 25 25' dur='1s' "
            "repeatCount='indefinite'/%3E%3C/circle%3E%3C/svg%3E")  # fmt: skip
_CSS = f"""<style>
[data-testid="stPlotlyChart"] {{ background: url("{_SPINNER}") center / 40px no-repeat; }}
</style>"""
_SLOT = ("display:flex;flex-direction:column;align-items:center;justify-content:center;gap:0.8rem;color:#777;"
         f"border:1px dashed #ccc;border-radius:0.5rem;height:{{height}}px")


def placeholder_style() -> None:
    """The spinner behind every Plotly chart of the page until the chart covers it."""
    st.html(_CSS)


def figure_slot(height: int, text: str = "Drawing the figure…", where=st):
    """An ``st.empty`` holding a placeholder of ``height`` px with a spinner; fill it with the figure
    (``slot.plotly_chart``, ``slot.image``)."""
    slot = where.empty()
    slot.html(f'<div data-testid="bes-figure-slot" style="{_SLOT.format(height=height)}">'
              f'<img src="{_SPINNER}" width="40" height="40" alt=""><span>{text}</span></div>')
    return slot
