"""Pictures people look at: confusion matrices, prediction grids, overlays, previews."""
