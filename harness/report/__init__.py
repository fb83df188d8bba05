"""The report stage: cell/sample frames, plots and the HTML, Markdown, CSV and Parquet reports."""
