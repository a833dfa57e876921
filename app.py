"""Brain Encoding Studio dashboard: ``streamlit run app.py``. Home is ``ui.home``; the other pages live in
``app_pages/`` and keep their URLs (``/Dataset``, ``/Explore``, ...). Not ``pages/``: Streamlit runs a session's
first script of a freshly started server as an old-style multipage app when a ``pages/`` folder sits beside
``app.py``, so the first visitor arriving at ``/Runs`` got a navigation without Home (an "app" entry)."""

import streamlit as st

from ui.home import PAGES, home

st.set_page_config(page_title="Brain Encoding Studio", page_icon="🧠", layout="wide")
st.navigation([st.Page(home, title="Home", icon="🏠", default=True),
               *(st.Page(path, title=title, url_path=title) for path, (title, _) in PAGES.items())]).run()
