"""The base of every dock: its controls scroll, so docks never push the window past the screen."""

from __future__ import annotations

from magicgui.widgets import Container, Widget
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QWidget

# The least height a dock asks of napari's window: a few controls, then it scrolls. Four docks
# stacked in one column then fit a 1080p screen (tests/test_widgets.py measures it).
MIN_DOCK_HEIGHT = 160


class Dock(Container):
    """A magicgui container whose controls scroll inside the dock.

    napari docks a magicgui widget's ``.native``; magicgui's own ``scrollable=True`` puts the
    controls in a scroll area but keeps ``.native`` on the widget inside it, which napari then
    takes out of the scroll area. Here ``.native`` is the scroll area itself (``body`` is the
    widget holding the controls), and the controls keep their natural height at the top.
    """

    def __init__(self, widgets: list[Widget], stretch: bool = True) -> None:
        super().__init__(widgets=widgets, scrollable=True)
        scroll: QScrollArea = self.root_native_widget
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setMinimumHeight(MIN_DOCK_HEIGHT)
        # magicgui reports parent changes (napari's close button) of the inner widget only
        scroll.installEventFilter(self._widget._event_filter)
        if stretch:  # spare height goes below the controls, not between them
            self.body.layout().addStretch(1)
        QTimer.singleShot(0, self.fit_width)  # once docked and laid out

    def fit_width(self) -> None:
        """Room for the vertical scroll bar beside the controls: napari docks a widget as narrow as
        its controls, whose right edge then slips under the bar when the dock scrolls. Call it
        again when the controls grow wider."""
        try:
            bar = self.native.verticalScrollBar().sizeHint().width() + 4  # napari's style: 15 px in all
            self.native.setMinimumWidth(self.body.minimumSizeHint().width() + bar)
        except RuntimeError:  # closed before the timer fired: its Qt widgets are gone
            pass

    @property
    def native(self) -> QScrollArea:  # what napari puts in the dock
        return self.root_native_widget

    @property
    def body(self) -> QWidget:
        """The widget inside the scroll area that holds the controls (and their layout)."""
        return self.root_native_widget.widget()
