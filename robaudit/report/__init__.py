"""Renderers: JSON (the source of truth), HTML, CSV and the terminal summary.

Every renderer reads the JSON document built by :func:`to_document`; none computes anything
new, so ``report.json`` alone is enough to re-render any other format.
"""

from robaudit.report.document import to_document
from robaudit.report.writers import write_reports

__all__ = ["to_document", "write_reports"]
