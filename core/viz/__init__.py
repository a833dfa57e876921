"""Pictures: fsaverage surfaces, Plotly figures, flat maps, volumes, charts."""
