"""Native charts of a tool sheet: the DrawingML chart parts and the drawing that places them.
"""

from __future__ import annotations

from commplan_xl.excel.ooxml import REL_NS, XML_ATTR, XML_TEXT
from commplan_xl.excel.sheet_xml import Chart, ToolSheet, clean_text, column_letter


def _ref(sheet: str, col: int, first: int, last: int | None = None) -> str:
    """An absolute reference to a cell or a column range, escaped for XML text."""
    quoted = "'" + sheet.replace("'", "''") + "'"
    letter = column_letter(col)
    ref = f"{quoted}!${letter}${first}"
    if last is not None:
        ref += f":${letter}${last}"
    return ref.translate(XML_TEXT)


def chart_xml(sheet: ToolSheet, chart: Chart) -> bytes:
    """A DrawingML bar or line chart of `chart.value_cols` against `chart.category_col`."""
    first = chart.first_row
    last = chart.last_row or max(len(sheet.rows), 1) + 1
    series = []
    for n, col in enumerate(chart.value_cols):
        extra = '<c:marker><c:symbol val="none"/></c:marker>' if chart.kind == "line" else (
            '<c:invertIfNegative val="0"/>')
        smooth = '<c:smooth val="0"/>' if chart.kind == "line" else ""
        series.append(
            f'<c:ser><c:idx val="{n}"/><c:order val="{n}"/>'
            f"<c:tx><c:strRef><c:f>{_ref(sheet.name, col, first - 1)}</c:f></c:strRef>"
            f"</c:tx>{extra}"
            f"<c:cat><c:strRef><c:f>{_ref(sheet.name, chart.category_col, first, last)}</c:f>"
            f"</c:strRef></c:cat>"
            f"<c:val><c:numRef><c:f>{_ref(sheet.name, col, first, last)}</c:f></c:numRef></c:val>"
            f"{smooth}</c:ser>"
        )
    if chart.kind == "line":
        plot = ('<c:lineChart><c:grouping val="standard"/><c:varyColors val="0"/>'
                + "".join(series)
                + '<c:marker val="1"/><c:axId val="10"/><c:axId val="100"/></c:lineChart>')
    else:
        grouping, overlap = ("stacked", '<c:overlap val="100"/>') if chart.kind == "stacked" \
            else ("clustered", "")
        plot = (f'<c:barChart><c:barDir val="col"/><c:grouping val="{grouping}"/>'
                '<c:varyColors val="0"/>' + "".join(series)
                + f'<c:gapWidth val="60"/>{overlap}<c:axId val="10"/><c:axId val="100"/>'
                "</c:barChart>")
    title = clean_text(chart.title).translate(XML_TEXT)
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<c:chartSpace xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        f'xmlns:r="{REL_NS}"><c:roundedCorners val="0"/><c:chart>'
        f"<c:title><c:tx><c:rich><a:bodyPr/><a:p><a:r><a:t>{title}</a:t></a:r></a:p>"
        '</c:rich></c:tx><c:overlay val="0"/></c:title><c:autoTitleDeleted val="0"/>'
        f"<c:plotArea><c:layout/>{plot}"
        '<c:catAx><c:axId val="10"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
        '<c:delete val="0"/><c:axPos val="b"/><c:majorTickMark val="out"/>'
        '<c:minorTickMark val="none"/><c:tickLblPos val="nextTo"/><c:crossAx val="100"/>'
        '<c:crosses val="autoZero"/><c:auto val="1"/><c:lblAlgn val="ctr"/>'
        '<c:lblOffset val="100"/></c:catAx>'
        '<c:valAx><c:axId val="100"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
        '<c:delete val="0"/><c:axPos val="l"/><c:majorGridlines/>'
        '<c:majorTickMark val="out"/><c:minorTickMark val="none"/>'
        '<c:tickLblPos val="nextTo"/><c:crossAx val="10"/><c:crosses val="autoZero"/>'
        '<c:crossBetween val="between"/></c:valAx></c:plotArea>'
        '<c:legend><c:legendPos val="b"/><c:overlay val="0"/></c:legend>'
        '<c:plotVisOnly val="0"/><c:dispBlanksAs val="gap"/></c:chart></c:chartSpace>'
    )
    return xml.encode("utf-8")


def drawing_xml(sheet: ToolSheet) -> bytes:
    """The drawing part holding the sheet's charts (relationship ids rId1, rId2, ...),
    stacked right of the data."""
    ncols = sheet.ncols
    anchors = []
    for n, chart in enumerate(sheet.charts):
        name = clean_text(chart.title).translate(XML_ATTR) or f"Chart {n + 1}"
        col, row = chart.anchor or (ncols + 1, 1 + 18 * n)
        cx, cy = (round(cm * 360000) for cm in chart.size)
        anchors.append(
            f"<xdr:oneCellAnchor><xdr:from><xdr:col>{col}</xdr:col><xdr:colOff>0"
            f"</xdr:colOff><xdr:row>{row}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>"
            f'<xdr:ext cx="{cx}" cy="{cy}"/><xdr:graphicFrame macro="">'
            f'<xdr:nvGraphicFramePr><xdr:cNvPr id="{n + 2}" name="{name}"/>'
            "<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr>"
            '<xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/></xdr:xfrm><a:graphic>'
            '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/chart">'
            '<c:chart xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" '
            f'r:id="rId{n + 1}"/></a:graphicData></a:graphic></xdr:graphicFrame>'
            "<xdr:clientData/></xdr:oneCellAnchor>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<xdr:wsDr xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/'
        'spreadsheetDrawing" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        f'xmlns:r="{REL_NS}">{"".join(anchors)}</xdr:wsDr>'
    )
    return xml.encode("utf-8")


def check_charts(sheet: ToolSheet) -> None:
    width = len(sheet.header)
    for chart in sheet.charts:
        cols = (chart.category_col, *chart.value_cols)
        if not chart.value_cols or any(not 0 <= c < width for c in cols):
            raise ValueError(f"{sheet.name}: chart {chart.title!r} names a column not in header")
