"""The Streamlit app (UI only; everything that computes comes from workbench).

main.py      the page: `streamlit run app/main.py [-- --checkpoints DIR --checkpoint FILE]`
paths.py     path security: the folders it may open and the check of a typed path
catalog.py   the checkpoints in those folders, as entries (workbench.research.groups groups them into
             families; workbench.research.picks says which family, depth and settings open first)
controls.py  *_ui() functions returning settings, and their server-side validation
runs.py      consumes the sampler's events, keeps each session's results in st.session_state
scheduler.py the server's work queue: K jobs at once, place in line, served block by block, cancel per step
panels.py    image grid, progress, compute meter, live FID panel, zoo charts
"""
