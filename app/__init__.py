"""The Streamlit app (UI only; everything that computes comes from workbench).

main.py      the page: `streamlit run app/main.py [-- --checkpoints DIR --checkpoint FILE]`
catalog.py   the checkpoints it may open (shipped zoo, user folders), grouped into families
controls.py  *_ui() functions returning settings, and their server-side validation
runs.py      consumes the sampler's events, keeps each session's results in st.session_state
scheduler.py the server's work queue: K jobs at once, place in line, served block by block, cancel per step
panels.py    image grid, progress, compute meter, live FID panel, zoo charts
"""
