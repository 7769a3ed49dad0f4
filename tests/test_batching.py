"""Batched generation in the sampler: the rows of several requests in one batch give each request the images it
gets alone; a row group that leaves is no longer computed and the others keep their images; batch_key lets only
requests that differ in their rows share a batch."""

import copy

import pytest
import torch
from conftest import randomize_head
from single_thread import one_thread  # noqa: F401

import workbench as wb
from workbench.core.config import replace
from workbench.sampling.noise import Rows
from workbench.sampling.request import batch_key


def make(**over):
    cfg = wb.preset("tiny", **{"model.num_blocks": 4, "sample.steps": 2, **over})
    m = wb.build_model(cfg).eval()
    randomize_head(m)
    return cfg, m


def same_image(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the last bits a matmul's blocking may change with the batch size, as tests/test_sampling_request
    states it; different noise moves pixels by the image's whole scale."""
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


CASES = [
    pytest.param({}, id="ddim"),
    pytest.param({"sample.sampler": "ddpm", "sample.context_noise": 0.3}, id="stochastic-context-noise"),
    pytest.param(
        {"model.num_classes": 3, "sample.class_counts": (1, 5, 2), "sample.cfg_scale": 2.0}, id="labels-guidance"
    ),
]
GROUPS = [(3, 0, 2), (8, 5, 3), (3, 2, 1)]  # (seed, first image, images): two requests of seed 3, one of seed 8


def run(m, cfg, rows, leave_after_block0=()):
    """Every event of a batch of `rows`; after block 0's event, the groups in `leave_after_block0` are sent."""
    gen = wb.generate_events(m, cfg, cfg.sample, rows=rows)
    events = [next(gen)]
    while True:
        last = events[-1]
        sent = set(leave_after_block0) if last.kind == "block" and last.block == 0 else None
        try:
            events.append(gen.send(sent))
        except StopIteration:
            return events


def rows_of(cfg, labelled: bool):
    labels = torch.tensor([2, 0]) if labelled and cfg.model.num_classes else None  # the first group's, given
    return [Rows(s, f, n, labels if g == 0 else None) for g, (s, f, n) in enumerate(GROUPS)]


@pytest.mark.parametrize("over", CASES)
def test_each_group_of_a_shared_batch_gets_the_images_of_its_request_alone(over):
    cfg, m = make(**over)
    rows = rows_of(cfg, labelled=True)
    events = run(m, cfg, rows)
    alone = [
        wb.generate(m, cfg, labels=r.labels, num_images=r.num_images, seed=r.seed, first_image=r.first_image)
        for r in rows
    ]
    last = events[-1]
    assert last.done and last.groups == (0, 1, 2) and last.x_t.shape[0] == 6
    for g, ref in enumerate(alone):
        assert same_image(last.part(g).x_t, ref), g
    assert not same_image(last.part(0).x_t[:1], last.part(2).x_t)  # images 0 and 2 of seed 3 differ
    step = next(e for e in events if e.kind == "step" and e.block == 1)
    assert torch.equal(step.part(1).x0, step.x0[2:5]) and torch.equal(step.part(1).x_t, step.x_t[2:5])


@pytest.mark.parametrize("over", CASES[1:])
def test_a_group_that_leaves_is_not_computed_further_and_the_others_keep_their_images(over):
    cfg, m = make(**over)
    rows = rows_of(cfg, labelled=False)
    full = run(m, cfg, rows)[-1]
    batch_sizes = []
    denoise = m.denoise_step

    def counted(cache, k, z_cond, xt, t, depth=None):
        batch_sizes.append((k, xt.shape[0]))
        return denoise(cache, k, z_cond, xt, t, depth)

    m.denoise_step = counted
    events = run(m, cfg, rows, leave_after_block0={1})
    guided = 2 if cfg.sample.cfg_scale != 1 else 1
    assert {b for k, b in batch_sizes if k == 0} == {6 * guided} and {b for k, b in batch_sizes if k > 0} == {
        3 * guided
    }
    last = events[-1]
    assert last.done and last.groups == (0, 2)
    with pytest.raises(ValueError, match=r"rows: group 1 is not in this batch.*Fix: read \(0, 2\)"):
        last.part(1)
    for g in (0, 2):
        assert same_image(last.part(g).x_t, full.part(g).x_t), g
    assert len(run(m, cfg, rows, leave_after_block0={0, 1, 2})) == 3  # every group left: block 0's events only


def test_rows_are_checked_with_errors_naming_the_fix():
    cfg, m = make()
    with pytest.raises(ValueError, match="labels: given beside rows. Fix"):
        next(wb.generate_events(m, cfg, cfg.sample, torch.zeros(2, dtype=torch.long), rows=[Rows(0, 0, 2)]))
    with pytest.raises(ValueError, match="rows: the batch noise layout .* Fix: use noise_layout='per-image'"):
        next(wb.generate_events(m, cfg, replace(cfg.sample, noise_layout="batch"), rows=[Rows(0, 0, 1), Rows(1, 0, 1)]))
    with pytest.raises(ValueError, match="rows: 0 images from image 0 of seed 1. Fix"):
        Rows(1, 0, 0)
    gen = wb.generate_events(m, cfg, cfg.sample, rows=[Rows(0, 0, 1)])
    next(gen)
    with pytest.raises(ValueError, match=r"rows: cannot drop group\(s\) \[4\]: the batch has groups 0..0"):
        gen.send({4})


def test_batch_key_shares_a_batch_only_between_requests_that_differ_in_their_rows():
    cfg, m = make(**{"model.num_classes": 3})
    base = wb.sample_request(cfg, steps=4)
    key = batch_key(m, cfg, base)
    assert hash(key) == hash(batch_key(m, cfg, replace(base, seed=9, first_image=3, num_images=5)))
    assert key == batch_key(m, cfg, replace(base, seed=9, first_image=3, num_images=5))
    changes = [
        {"steps": 5},
        {"sampler": "ddpm"},
        {"cfg_scale": 2.0},
        {"flow_shift": 2.0},
        {"x0_clip": "clip"},
        {"context_noise": 0.1},
        {"precision": "bf16"},
        {"diffusion_depth": 1},
        {"depth_schedule": (2, 2, 1, 1)},
        {"steps_schedule": (4, 4, 2, 2)},
        {"class_counts": (1, 2, 3)},
        {"use_cache": False},
    ]
    for change in changes:
        assert batch_key(m, cfg, replace(base, **change)) != key, change
    assert batch_key(copy.deepcopy(m), cfg, base) != key  # another model object: other weights, maybe
    assert batch_key(m, cfg.override(**{"diffusion.prediction": "v_prediction"}), base) != key
    assert batch_key(m, cfg, replace(base, noise_layout="batch")) is None  # one generator per batch: never shared
