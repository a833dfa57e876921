"""Brain Encoding Studio core library: data, features, encoding models, metrics, runs.

Importable without Streamlit; the dashboard (``app.py``, ``app_pages/``) and the CLI
(``python -m core``) are thin layers over it.
"""

__version__ = "0.1.0"
