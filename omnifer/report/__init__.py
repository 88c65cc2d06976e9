"""Workspace reports: one self-contained HTML page and a Markdown summary, rendered from plain
data (paths, dicts, arrays); ``omnifer.pipeline.report`` gathers that data from the runs."""

from omnifer.report.config import ReportConfig
from omnifer.report.figures import embedding_map, mined_faces_sheet, pca_2d
from omnifer.report.html import data_uri, render_html
from omnifer.report.markdown import markdown_table, render_markdown
from omnifer.report.results import (COLUMNS, METRICS, chance_notes, metrics_of, results_table,
                                    share_of_mined_gain)

__all__ = ["COLUMNS", "METRICS", "ReportConfig", "chance_notes", "data_uri", "embedding_map",
           "markdown_table", "metrics_of", "mined_faces_sheet", "pca_2d", "render_html",
           "render_markdown", "results_table", "share_of_mined_gain"]
