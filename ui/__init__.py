"""Streamlit helpers shared by the dashboard pages (the pages stay thin; computation lives in core)."""
