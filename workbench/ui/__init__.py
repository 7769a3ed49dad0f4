"""The notebook layer: interactive pieces a person drives in JupyterLab (the ipywidgets playground that samples a
checkpoint block by block beside a family's FID-vs-compute curves, and the switch that retrains a notebook's
family from inside the notebook). It is the top layer: it may import every other package of `workbench`, and
nothing in `workbench` imports it, so the library and the CLI never need ipywidgets.
"""
