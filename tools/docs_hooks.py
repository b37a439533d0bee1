"""MkDocs hooks of the tfprune site (configured in mkdocs.yml)."""
