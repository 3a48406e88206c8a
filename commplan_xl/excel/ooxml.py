"""The Office Open XML names the tool's parts use: namespaces, relationship and content
types, and the XML escapes of text and attribute values.
"""

from __future__ import annotations

REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
REL_TYPE = REL_NS + "/"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_DRAWING = "application/vnd.openxmlformats-officedocument.drawing+xml"
CT_CHART = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"
STRICT_MAIN = "http://purl.oclc.org/ooxml/spreadsheetml/main"
XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
XML_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
