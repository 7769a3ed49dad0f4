"""The five findings decided from reports: each verdict follows the intervals (reproduced, opposite, undecided,
or the paper's direction with a smaller effect), never the point estimates alone."""

import pytest
from test_experiments import make_report, vertical_fid, write

from workbench.research import findings as fd
from workbench.research import reports
from workbench.research.replicates import seeded_name

ABLATION_OVER = {
    "default": {},
    "no-zcond": {"model.use_z_cond": False},
    "no-clean": {"model.clean_stream": False},
    "shared": {"model.towers": "shared"},
    "mlp-denoise": {"model.denoiser_attention": "block"},
    "hidden0": {"diffusion.hidden_loss_weight": 0.0},
}


def vertical(root, fid_of_d, width=0.5):
    for d in (1, 2, 3, 4):
        write(root, make_report("vertical", f"D{d}", fid_of_d(d), width=width, **{"model.diffusion_depth": d}))
    return reports.load_reports("vertical", root)


def blocks(root, fids, width=0.5, family="blocks-fmnist"):
    for t, fid in fids.items():
        write(root, make_report(family, f"T{t}", lambda s, f=fid: f, width=width, **{"model.num_blocks": t}))
    return reports.load_reports(family, root)


def ablations(root, seeds: dict[str, list[float]]):
    for name, fids in seeds.items():
        for seed, fid in enumerate(fids):
            write(
                root,
                make_report(
                    "ablations",
                    seeded_name(name, seed),
                    lambda s, f=fid: f,
                    width=0.3,
                    **ABLATION_OVER[name],
                    **{"train.seed": seed},
                ),
            )
    return reports.load_reports("ablations", root)


def test_vertical_and_crossover_verdicts_follow_the_intervals(tmp_path_factory):
    paper_shape = vertical(tmp_path_factory.mktemp("a"), vertical_fid)  # D=4 lowest at S=32, D=1 far ahead at S=2
    f = fd.vertical_finding(paper_shape)
    assert f.verdict == fd.REPRODUCED and "D=4 below D=1" in f.why and f.decided
    assert f.ours.startswith(
        "trained 600 steps x 64, one training seed each (intervals: sampling noise only); D=1/2/3/4 of 4 at S=32"
    )  # the budget behind the numbers
    mixed = dict(
        paper_shape, D4=reports.Report(**{**paper_shape["D4"].__dict__, "training": {"steps": 3000, "batch": 64}})
    )
    assert fd.vertical_finding(mixed).ours.startswith("trained 600 steps x 64 / 3,000 steps x 64, one")
    c = fd.crossover_finding(paper_shape)
    assert c.verdict in (fd.REPRODUCED, fd.SMALLER) and "intervals disjoint" in c.why
    flat_high = vertical(tmp_path_factory.mktemp("b"), lambda d: (lambda s: 20.0 + (d == 4) * 5.0))
    assert fd.vertical_finding(flat_high).verdict == fd.OPPOSITE  # all-diffusion worse at full steps
    assert fd.crossover_finding(flat_high).verdict == fd.SMALLER  # 20 vs 25: 20% lower, below the paper's 60%
    big = vertical(tmp_path_factory.mktemp("c"), lambda d: (lambda s: 10.0 if d == 1 else 40.0))
    assert fd.crossover_finding(big).verdict == fd.REPRODUCED  # 75% lower, intervals disjoint
    wide = vertical(tmp_path_factory.mktemp("d"), lambda d: (lambda s: 20.0 + d * 0.1), width=3.0)
    v, c = fd.vertical_finding(wide), fd.crossover_finding(wide)
    assert v.verdict == c.verdict == fd.UNDECIDED and not v.decided and "overlap" in c.why + v.why
    worse_ar = vertical(tmp_path_factory.mktemp("e"), lambda d: (lambda s: 30.0 if d == 1 else 20.0))
    assert fd.crossover_finding(worse_ar).verdict == fd.OPPOSITE


@pytest.mark.parametrize("side,paper_t", [("low", 1), ("high", 16)])
def test_blocks_verdict_needs_the_best_t_apart_from_every_other(tmp_path_factory, side, paper_t):
    t1_best = blocks(tmp_path_factory.mktemp("a"), {1: 20.0, 4: 25.0, 16: 30.0})
    assert fd.blocks_finding(t1_best, side).verdict == (fd.REPRODUCED if paper_t == 1 else fd.OPPOSITE)
    t16_best = blocks(tmp_path_factory.mktemp("b"), {1: 30.0, 4: 25.0, 16: 20.0})
    assert fd.blocks_finding(t16_best, side).verdict == (fd.REPRODUCED if paper_t == 16 else fd.OPPOSITE)
    close = blocks(tmp_path_factory.mktemp("c"), {1: 30.0, 4: 20.6, 16: 20.0})
    f = fd.blocks_finding(close, side)
    assert f.verdict == fd.UNDECIDED and "overlaps T=4" in f.why


def test_a_faces_arm_joins_the_high_resolution_row_and_says_whether_it_agrees(tmp_path_factory):
    high = blocks(tmp_path_factory.mktemp("h"), {1: 30.0, 4: 25.0, 16: 20.0}, family="blocks-emoji256")
    same = blocks(tmp_path_factory.mktemp("s"), {4: 40.0, 16: 30.0}, family="blocks-people256")
    other = blocks(tmp_path_factory.mktemp("o"), {4: 30.0, 16: 40.0}, family="blocks-people256")
    alone = fd.findings(blocks_high=high)[0][3]
    agreeing = fd.findings(blocks_high=high, blocks_faces=same)[0][3]
    assert agreeing.verdict == alone.verdict == fd.REPRODUCED
    assert agreeing.ours.startswith(alone.ours + "; people subset: ") and "T=4 40.0" in agreeing.ours
    assert "the people subset agrees (T=16 apart from every other T)" in agreeing.why
    differing = fd.findings(blocks_high=high, blocks_faces=other)[0][3]
    assert differing.verdict == fd.REPRODUCED and f"the people subset is {fd.OPPOSITE}" in differing.why
    one_t = blocks(tmp_path_factory.mktemp("1"), {16: 30.0}, family="blocks-people256")
    assert fd.findings(blocks_high=high, blocks_faces=one_t)[0][3] == alone  # one T decides nothing


def test_ablations_decided_across_seeds_and_shared_towers_as_an_equivalence(tmp_path_factory):
    abl = ablations(
        tmp_path_factory.mktemp("a"),
        {
            "default": [30.0, 30.4, 29.7],
            "no-zcond": [34.0, 35.0, 33.5],  # worse in every seed: reproduced
            "no-clean": [31.0, 28.0, 32.5],  # spread swamps the mean shift: undecided
            "shared": [30.1, 29.9, 30.3],  # within 3% of the default: the paper's 'about the same' reproduced
            "mlp-denoise": [26.0, 25.5, 26.5],  # better in every seed: opposite
            "hidden0": [36.0, 35.0, 37.0],
        },
    )
    per = {f.finding.split(": ", 1)[1].split(" (")[0]: f for f in fd.ablation_findings(abl)}
    verdicts = {k.split()[0]: f.verdict for k, f in per.items()}
    assert verdicts == {
        "clean": fd.REPRODUCED,
        "z_cond": fd.UNDECIDED,
        "shared": fd.REPRODUCED,
        "MLP": fd.OPPOSITE,
        "hidden": fd.REPRODUCED,
    }
    assert all("Welch" in f.ours and "seed spread" in f.ours for f in per.values())
    summary = fd.ablations_summary(list(per.values()))
    assert summary.verdict == fd.UNDECIDED and summary.ours.startswith("3 reproduced, 1 opposite, 1 undecided")
    assert fd.ablations_summary([per[k] for k in per if not k.startswith(("MLP", "z_cond"))]).verdict == fd.REPRODUCED
    # a wide seed spread around an equal mean is not 'about the same': the interval must fit inside the band
    loose = ablations(tmp_path_factory.mktemp("b"), {"default": [30.0, 31.0, 29.0], "shared": [27.0, 33.0, 30.5]})
    (shared,) = fd.ablation_findings(loose)
    assert shared.verdict == fd.UNDECIDED and "beyond" in shared.why
    # one seed each: the bootstrap intervals decide, the difference's interval spans their far ends
    one = ablations(tmp_path_factory.mktemp("c"), {"default": [30.0], "shared": [36.0], "hidden0": [30.4]})
    shared, hidden = fd.ablation_findings(one)
    assert shared.verdict == fd.OPPOSITE and "(worse)" in shared.why and "[+5.4, +6.6]" in shared.ours
    assert hidden.verdict == fd.UNDECIDED and "no seed spread" in hidden.ours and "1 seed" in hidden.ours
    summary = fd.ablations_summary([shared, shared, shared])  # decided rows, but from one seed: not decided
    assert summary.verdict == fd.UNDECIDED and "one training seed" in summary.why
    mixed = fd.ablations_summary([shared, *per.values()])  # seeds landing one ablation at a time
    assert mixed.ours.endswith("1 to 3 training seeds per row") and mixed.verdict == fd.UNDECIDED
    assert mixed.why.startswith(f"one training seed on {shared.finding.removeprefix('ablation: ')}: ")  # that row only


def test_the_results_table_counts_decided_findings_and_names_missing_families(tmp_path_factory):
    v = vertical(tmp_path_factory.mktemp("v"), vertical_fid)
    low = blocks(tmp_path_factory.mktemp("l"), {1: 30.0, 4: 25.0, 16: 20.0})
    five, per = fd.findings(vertical=v, blocks_low=low)
    assert len(five) == 5 and per == []
    assert [f.verdict for f in five][:3] == [fd.REPRODUCED, five[1].verdict, fd.OPPOSITE]
    assert five[3].ours == five[4].ours == "no reports" and "blocks family" in five[3].why
    md = fd.findings_markdown(five, per)
    assert md.count("\n|") >= 6 and "3 of 5 findings decided" in md


def test_zoo_findings_rewrites_only_the_readme_table(tmp_path_factory):
    from workbench.research import zoo

    root = tmp_path_factory.mktemp("zoo")
    vertical(root, vertical_fid)
    readme = root / "README.md"
    readme.write_text(f"intro\n{zoo.FINDINGS_START}\nold table\n{zoo.FINDINGS_END}\n\nafter\n")
    table = zoo.cmd_findings(root, readme)
    text = readme.read_text()
    assert (
        text.startswith(f"intro\n{zoo.FINDINGS_START}\n| finding (paper)")
        and text.endswith(f"{zoo.FINDINGS_END}\n\nafter\n")
        and "old table" not in text
        and table in text
    )
    zoo.cmd_findings(root, readme)
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no findings markers"):
        zoo.cmd_findings(root, readme)
    assert readme.read_text() == "no markers\n"  # refused, nothing lost


def test_the_second_extractor_shows_beside_the_classifier(tmp_path):
    for d in (1, 4):
        r = make_report("vertical", f"D{d}", vertical_fid(d), **{"model.diffusion_depth": d})
        if d == 1:
            r["eval"]["inception"] = {
                "steps": 16,
                "fid": 41.04,
                "fid_low": 39.6,
                "fid_high": 42.4,
                "fid_inf": 34.1,
                "extractor": "inception-7ff4a85c3a63",
                "n": 1000,
            }
        write(tmp_path, r)
    v = reports.load_reports("vertical", tmp_path)
    assert reports.inception_text(v["D1"]) == "41.0 [39.6, 42.4] at S=16, FID-inf 34.1"
    assert reports.inception_text(v["D4"]) == "-"
    assert fd.vertical_finding(v).ours.endswith("; Inception: D1 41.0 [39.6, 42.4] at S=16, FID-inf 34.1")
    assert [row["Inception FID"] for row in reports.budget_table(v)] == [reports.inception_text(v["D1"]), "-"]
