"""The notebook playground (ipywidgets): pick a checkpoint (the shipped zoo or any folder), set depth D (every D of
an elastic file), steps S, sampler, seed, images, and class and guidance for a labelled model; Generate streams the
blocks into the output as they finish (decoded for latent models), with the compute meter and the live FID; Stop
ends the run and keeps the finished blocks. Beside a family's reports it draws their FID-vs-compute curves and
marks the chosen (D, S) as the sliders move.

    pg = Playground(reports=reports, x="paper_cost")   # in a notebook cell; pg is displayed as its widget
    pg.select(path); pg.depth.value = 3; pg.generate_button.click(); pg.wait()   # what the tests do

Generate samples in a thread (the kernel stays free, as the ipywidgets guide's background updates do); `wait()`
joins it, and `background=False` runs it in the caller (a test hook)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as W
from IPython import get_ipython
from IPython.display import display

from ..core.paths import ZOO_DIR
from ..research.plots import fid_vs_compute_figure, fid_vs_steps_figure
from ..research.reports import COSTS, Report, weights_path
from ..training.checkpoint import load_for_inference
from .session import (
    Choice,
    Loaded,
    SampleRun,
    Settings,
    class_options,
    depth_note,
    depth_options,
    fid_text,
    find_checkpoints,
    live_reference,
    meter_text,
    png,
    sampler_options,
    settings_marker,
)

WIDE = W.Layout(width="560px")
DEFAULT_STEPS = 16


class Playground(W.VBox):
    """The widget: controls on top, then the images, the meter, the FID line and, with reports, the figure."""

    def __init__(
        self,
        reports: Mapping[str, Report] | None = None,
        x: str = "paper_cost",
        folders: Sequence[str | Path] = (ZOO_DIR,),
        checkpoint: str | Path | None = None,
        steps: int = DEFAULT_STEPS,
        num_images: int = 8,
        background: bool = True,
    ):
        self.reports, self.x, self.background = dict(reports or {}), x, background
        self.loaded: Loaded | None = None
        self.run: SampleRun | None = None
        self.thread: threading.Thread | None = None
        self.figure = None  # the plotly figure last drawn (the tests read its marker)
        self._cache: dict[Path, Loaded] = {}
        self._references: dict = {}
        self.picker = W.Dropdown(description="checkpoint", layout=WIDE, style={"description_width": "90px"})
        self.folder = W.Text(placeholder="another folder of checkpoints", description="folder", layout=WIDE)
        self.scan_button = W.Button(description="Scan folder", icon="folder-open")
        self.depth = W.SelectionSlider(options=[1], description="depth D", continuous_update=False)
        self.depth_label = W.Label()
        self.steps = W.IntSlider(value=steps, min=1, max=64, description="steps S", continuous_update=False)
        self.sampler = W.Dropdown(description="sampler")
        self.seed = W.IntText(value=0, description="seed")
        self.num_images = W.IntSlider(value=num_images, min=1, max=64, description="images")
        self.label = W.Dropdown(description="class")
        self.cfg_scale = W.FloatSlider(value=1.0, min=1.0, max=6.0, step=0.25, description="guidance")
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="")
        self.status = W.Label("pick a checkpoint and press Generate")
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.meter = W.Label()
        self.fid = W.Label()
        self.notes = W.HTML()
        self.plot = W.Output()
        self.folders = [Path(f) for f in folders]
        self._rescan()
        self.picker.observe(self._on_pick, "value")
        for w in (self.depth, self.steps):
            w.observe(self._on_slide, "value")
        self.scan_button.on_click(self._on_scan)
        self.generate_button.on_click(self._on_generate)
        self.stop_button.on_click(self._on_stop)
        self.labelled = W.HBox([self.label, self.cfg_scale])
        super().__init__(
            [
                self.picker,
                W.HBox([self.folder, self.scan_button]),
                W.HBox([self.depth, self.depth_label]),
                W.HBox([self.steps, self.sampler]),
                W.HBox([self.seed, self.num_images]),
                self.labelled,
                W.HBox([self.generate_button, self.stop_button, self.progress, self.status]),
                self.image,
                self.meter,
                self.fid,
                self.notes,
                self.plot,
            ]
        )
        if checkpoint is not None:
            self.select(checkpoint)
        self._on_pick()

    @classmethod
    def for_reports(cls, reports: Mapping[str, Report], x: str = "paper_cost", **options) -> Playground:
        """A playground beside `reports`' curves, opened on their elastic checkpoint (one file, every D) when one
        ships, else on the first that ships weights; the zoo and the reports' folders are offered."""
        shipped = [(r, weights_path(r)) for r in reports.values()]
        shipped = [(r, w) for r, w in shipped if w is not None]
        first = next((w for r, w in shipped if r.elastic), shipped[0][1] if shipped else None)
        folders = dict.fromkeys([ZOO_DIR, *(w.parent for _, w in shipped)])
        return cls(reports=reports, x=x, folders=list(folders), checkpoint=first, **options)

    # ---- the checkpoint ----------------------------------------------------------------------------------------
    def _rescan(self) -> None:
        choices, notes = find_checkpoints(self.folders)
        self.choices = choices
        self.picker.options = [(c.label, c) for c in choices]
        self.notes.value = "<br>".join(notes[:5]) if notes else ""

    def _on_scan(self, _=None) -> None:
        """Add the typed folder to the picker (its checkpoints, searched recursively)."""
        text = self.folder.value.strip()
        if not text:
            self.notes.value = "folder: empty. Fix: type the path of a folder that holds .safetensors checkpoints."
            return
        if Path(text).expanduser() not in self.folders:
            self.folders.append(Path(text).expanduser())
        before = len(self.choices)
        self._rescan()
        self.notes.value = f"{len(self.choices) - before} checkpoint(s) added from {text}. " + self.notes.value

    def select(self, path: str | Path) -> Choice:
        """Pick the checkpoint at `path` (its folder is scanned when the picker does not offer it yet)."""
        path = Path(path).resolve()
        found = next((c for c in self.choices if c.path.resolve() == path), None)
        if found is None:
            self.folders.append(path.parent)
            self._rescan()
            found = next((c for c in self.choices if c.path.resolve() == path), None)
        if found is None:
            raise ValueError(f"{path}: not a workbench checkpoint. Fix: pick a .safetensors file the picker lists.")
        self.picker.value = found
        return found

    @property
    def choice(self) -> Choice | None:
        return self.picker.value

    def _on_pick(self, _=None) -> None:
        c = self.choice
        if c is None:
            self.status.value = "no checkpoints found: type a folder and press Scan folder"
            return
        cfg = c.config
        self.depth.options = depth_options(cfg)
        self.depth.value = cfg.model.diffusion_depth if cfg.model.diffusion_depth in self.depth.options else 1
        self.depth.disabled = len(self.depth.options) == 1
        self.sampler.options = sampler_options(cfg)
        self.sampler.value = self.sampler.options[0]
        classes = class_options(cfg)
        self.label.options = classes or [("(unconditional)", None)]
        self.cfg_scale.value = cfg.sample.cfg_scale if classes else 1.0
        self.labelled.layout.display = None if classes else "none"
        self._on_slide()

    # ---- sliders move the marker -------------------------------------------------------------------------------
    def _on_slide(self, _=None) -> None:
        c = self.choice
        if c is None:
            return
        self.depth_label.value = f"N={c.config.model.depth}, {depth_note(c.config, self.depth.value)}"
        if not self.reports:
            return
        curves = {name: r.points(self.x) for name, r in self.reports.items()}
        name, marker = settings_marker(self.reports, c, self.depth.value, self.steps.value, self.x)
        if self.x == "steps":
            self.figure = fid_vs_steps_figure(curves, {name: marker}, title="FID against steps; the chosen settings")
        else:
            self.figure = fid_vs_compute_figure(
                curves, {name: marker}, x_title=COSTS[self.x], title="FID against compute; the chosen settings"
            )
        if get_ipython() is not None:  # in a kernel; a test reads self.figure instead
            self.plot.clear_output(wait=True)
            with self.plot:
                display(self.figure)

    # ---- Generate and Stop -------------------------------------------------------------------------------------
    def settings(self) -> Settings:
        return Settings(
            depth=self.depth.value,
            steps=self.steps.value,
            sampler=self.sampler.value,
            seed=int(self.seed.value),
            num_images=self.num_images.value,
            label=self.label.value,
            cfg_scale=self.cfg_scale.value,
        )

    def _load(self, c: Choice) -> Loaded:
        if c.path not in self._cache:
            model, config = load_for_inference(c.path)
            self._cache = {c.path: Loaded.from_model(model, config)}  # one model at a time: they can be large
        return self._cache[c.path]

    def _on_generate(self, _=None) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.status.value = "a run is in progress: press Stop first"
            return
        c = self.choice
        if c is None:
            self.status.value = "no checkpoint: type a folder and press Scan folder"
            return
        self.status.value = "loading the checkpoint"
        self.loaded = self._load(c)
        data = self.loaded.config.data
        if data not in self._references:
            self._references[data] = live_reference(self.loaded.config)
        reference, problem = self._references[data]
        self.run = SampleRun(self.loaded, self.settings(), reference, problem, on_update=self._draw)
        self.generate_button.disabled, self.stop_button.disabled = True, False
        self.meter.value, self.fid.value = "compute: starting", "FID: after the last block"
        if self.background:
            self.thread = threading.Thread(target=self._work, args=(self.run,), daemon=True)
            self.thread.start()
        else:
            self._work(self.run)

    def _work(self, run: SampleRun) -> None:
        try:
            run.run()
        except Exception as err:  # noqa: BLE001 -- a thread's error would vanish: show it in the widget
            run.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            run.status = "error"
            self._draw(run)
        finally:
            self.generate_button.disabled, self.stop_button.disabled = False, True

    def _on_stop(self, _=None) -> None:
        if self.run is not None:
            self.run.stop()

    def _draw(self, run: SampleRun) -> None:
        if run.images is not None:
            self.image.value = png(run.images, nrow=min(8, run.settings.num_images))
        self.progress.value = run.progress
        self.status.value = run.error or run.status
        self.meter.value = meter_text(run)
        self.fid.value = fid_text(run)

    def wait(self, timeout: float | None = None) -> SampleRun | None:
        """Join the sampling thread (tests, scripts): the finished or stopped run."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.run
