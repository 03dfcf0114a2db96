"""What people read: the results document, report.md, plots, the dashboard, README tables."""
