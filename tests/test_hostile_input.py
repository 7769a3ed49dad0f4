"""Hostile input to the app: the path field and the command line, fuzzed.

Traversal, NUL bytes, very long strings, odd unicode, links (out of the folders, loops, to devices), devices, FIFOs,
folders, huge, truncated, empty and foreign files: each is refused with a message that says what to do, the page
keeps serving, and an audit hook on every `open` shows that nothing outside the allowed folders was read."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from single_thread import one_thread  # noqa: F401
from test_app import start, submit, write_checkpoint

from app import catalog
from workbench.training.checkpoint import FORMAT

ROOT = Path(__file__).resolve().parent.parent

OPENED: list[str] | None = None  # paths opened while an audit is on


def _audit(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only inside `audit()`


@contextmanager
def audit():
    global OPENED
    OPENED = opened = []
    try:
        yield opened
    finally:
        OPENED = None


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """user/ (allowed) with one good checkpoint and every kind of bad file; outside/ with a secret checkpoint."""
    base = tmp_path_factory.mktemp("hostile")
    user, outside = base / "user", base / "outside"
    good = write_checkpoint(user, "D2.safetensors", "vertical/D2", 2)
    secret = write_checkpoint(outside, "secret.safetensors", "vertical/D3", 3)
    (outside / "secret.txt").write_text("secret\n")
    (outside / "run").mkdir()
    (outside / "run" / "latest").write_text("../secret.safetensors\n")
    links = {
        "out.safetensors": secret,
        "outdir": outside,
        "zero.safetensors": Path("/dev/zero"),
        "passwd.safetensors": Path("/etc/passwd"),
        "loop.safetensors": user / "loop.safetensors",
        "dangling.safetensors": user / "nothing-here",
    }
    for name, target in links.items():
        (user / name).symlink_to(target)
    os.mkfifo(user / "fifo.safetensors")
    data = good.read_bytes()
    (user / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (user / "header-only.safetensors").write_bytes(data[:40])
    (user / "empty.safetensors").write_bytes(b"")
    (user / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + os.urandom(64))
    (user / "noise.safetensors").write_bytes(os.urandom(4096))
    with open(user / "huge.safetensors", "wb") as f:  # sparse 8 GiB claiming a 2**60-byte header
        f.write((1 << 60).to_bytes(8, "little") + b"{")
        f.truncate(8 << 30)
    save_file(
        {"x": torch.zeros(1)},
        str(user / "bogus-config.safetensors"),
        metadata={
            "format": FORMAT,
            "version": "1",
            "header": json.dumps({"config": {"model": "nonsense"}, "step": 1, "data": {}, "kind": "x"}),
        },
    )
    save_file({"x": torch.zeros(1)}, str(user / "not-workbench.safetensors"))
    for name, latest in [("run-out", "../../outside/secret.safetensors"), ("run-missing", "nope.safetensors")]:
        (user / name).mkdir()
        (user / name / "latest").write_text(latest + "\n")
    (user / "run-fifo").mkdir()
    os.mkfifo(user / "run-fifo" / "latest")
    (user / "empty-folder").mkdir()
    return {"base": base, "user": user, "outside": outside, "good": good, "secret": secret}


def hostile_paths(t: dict[str, Path]) -> list[str]:
    user, outside, rel_user = t["user"], t["outside"], os.path.relpath(t["user"], ROOT)
    traversal = [
        str(outside / "secret.safetensors"),
        f"{user}/../outside/secret.safetensors",
        f"{user}/./../outside/./secret.safetensors",
        f"{user}//..//outside//secret.safetensors",
        f"{rel_user}/../outside/secret.safetensors",
        "../" * 20 + "etc/passwd",
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/self/mem",
        "/root/.ssh/id_rsa",
        "~/.bash_history",
        "~root/.profile",
        "~nobody-such-user/x",
        "..",
        "/",
        "%2e%2e%2fetc%2fpasswd",
        "file:///etc/passwd",
        "C:\\Windows\\win.ini",
        "\\\\server\\share\\x",
        f"{user}/run-out/../../outside/secret.txt",
    ]
    nul = ["a\0b", f"{t['good']}\0.txt", "\0", f"{user}/\0/../../outside/secret.safetensors"]
    long = [
        "x" * 5000,
        "x" * catalog.MAX_PATH,
        f"{user}/" + "a" * 300 + ".safetensors",
        f"{user}/" + "a/" * 2000,
        f"{user}/" + "../" * 1300 + "etc/passwd",
    ]
    unicode = [
        f"{user}/\u202egood.safetensors",
        f"{user}/D2\u200b.safetensors",
        "\ufeff/etc/passwd",
        f"{user}/\U0001f9e9.safetensors",
        "\uff0fetc\uff0fpasswd",
        f"{user}/\u2024\u2024/outside",
        f"{user}/e\u0301.safetensors",
        "\ud800",
        "\udcff",
        "\n/etc/passwd",
        f"{user}/\ta",
        "\x1b[31mred",
        "\u00a0",
        "   ",
        "",
    ]
    links = [
        f"{user}/{n}"
        for n in (
            "out.safetensors",
            "outdir/secret.safetensors",
            "zero.safetensors",
            "passwd.safetensors",
            "loop.safetensors",
            "dangling.safetensors",
            "outdir",
        )
    ]
    devices = [
        "/dev/zero",
        "/dev/urandom",
        "/dev/stdin",
        "/dev/tty",
        "/dev/null",
        "/proc/self/fd/0",
        f"{user}/fifo.safetensors",
    ]
    folders = [
        str(user),
        f"{user}/empty-folder",
        f"{user}/run-out",
        f"{user}/run-missing",
        f"{user}/run-fifo",
        str(outside),
        str(outside / "run"),
        "/tmp",
        "/dev",
    ]
    files = [
        f"{user}/{n}.safetensors"
        for n in (
            "truncated",
            "header-only",
            "empty",
            "pickle",
            "noise",
            "huge",
            "bogus-config",
            "not-workbench",
            "missing",
        )
    ]
    return traversal + nul + long + unicode + links + devices + folders + files


SECRETS = [
    "/etc/passwd",
    "/etc/shadow",
    "/proc/self/environ",
    "/proc/self/mem",
    "/root/.ssh/id_rsa",
    "/root/.bash_history",
    "/root/.profile",
    "/dev/zero",
    "/dev/urandom",
    "/dev/stdin",
    "/dev/tty",
    "/dev/null",
    "/proc/self/fd/0",
]  # what the fuzz names outside its tree


def forbidden(t: dict[str, Path], opened: list[str]) -> list[str]:
    """Opened paths that the fuzz named outside the allowed folder: anything in its tree but user/, or a secret."""
    user, base = str(t["user"].resolve()), str(t["base"].resolve())
    secrets = {os.path.realpath(p) for p in SECRETS}
    bad = []
    for p in opened:
        real = os.path.realpath(p) if "\0" not in p else p
        if real in secrets or (real.startswith(base + "/") and not real.startswith(user + "/")):
            bad.append(p)
    return bad


def test_check_path_refuses_every_hostile_path_and_reads_nothing_outside(tree):
    folders = catalog.Folders(Path("/nonexistent"), (tree["user"].resolve(),), None)
    paths = hostile_paths(tree)
    outcomes = {}
    with audit() as opened:
        for text in paths:
            try:
                catalog.load_entry(catalog.check_path(text, folders), "user")  # what the page does with it
                outcomes[text] = "opened"
            except (ValueError, OSError) as err:  # PathRefused, CheckpointError
                outcomes[text] = str(err)
        good = catalog.load_entry(catalog.check_path(str(tree["good"]), folders), "user")
    assert good.name == "vertical/D2"
    assert not [t for t, o in outcomes.items() if o == "opened"]
    assert not [t for t, o in outcomes.items() if "Fix:" not in o], outcomes
    assert len(paths) >= 70
    assert not forbidden(tree, opened), forbidden(tree, opened)
    assert any(p.endswith("truncated.safetensors") for p in opened)  # the audit does see what is read


def test_the_page_refuses_hostile_paths_and_keeps_serving(tree, monkeypatch):
    # every other one (each is a full page run; the full list runs above), without lone surrogates: a browser
    # cannot send them (the websocket carries UTF-8)
    paths = [p for p in hostile_paths(tree)[::2] if not any(0xD800 <= ord(c) < 0xE000 for c in p)]
    with audit() as opened:
        at = start(monkeypatch, "--checkpoints", str(tree["user"]), "--checkpoint", str(tree["good"]))
        family, listed = at.selectbox(key="family").value, at.selectbox(key="family").options
        refused = 0
        for text in paths:
            at = at.text_input(key="path").set_value(text).run()  # set_value: a client ignoring max_chars
            assert not at.exception, (text, at.exception)
            errors = [e.value for e in at.sidebar.error]
            if text:  # an empty field is no request
                assert errors and errors[0].startswith("Refused:") and "Fix:" in errors[0], (text, errors)
                refused += 1
            assert at.selectbox(key="family").options == listed  # nothing else was opened
        at = at.text_input(key="path").set_value("").run()
        at.slider(key=f"A@{family}.S").set_value(2)
        at = submit(at)
    assert refused >= 30
    assert not at.exception and not at.error and at.image  # still serving
    assert not forbidden(tree, opened), forbidden(tree, opened)


@pytest.mark.parametrize("option", ["--checkpoint", "--checkpoints"])
def test_hostile_command_line_values_are_refused_with_a_note(tree, option):
    """The operator may name any folder or checkpoint (even outside the zoo): nothing crashes the app, what cannot
    be used gets a note saying why and what to do, and only what was named is read."""
    paths = [p for p in hostile_paths(tree) if p and "\0" not in p and p not in ("/", "/tmp", "/dev")]  # argv
    refused = 0  # cannot hold NUL; scanning the whole disk is slow, not hostile
    for text in paths:
        with audit() as opened:
            folders = catalog.folders_from([option, text, "--checkpoints", str(tree["user"])], {})
            entries, notes = catalog.scan(folders)
        named = {os.path.join(os.path.realpath(text), "latest")} if text.isprintable() else set()  # a run folder's
        named |= {str(folders.default), str(folders.default.with_suffix(".json"))} if folders.default else set()
        assert set(forbidden(tree, opened)) <= named or option == "--checkpoints", (text, forbidden(tree, opened))
        if option == "--checkpoint" and folders.default is None:
            assert any(n.startswith("--checkpoint:") and "Fix:" in n for n in notes), (text, notes)
            refused += 1
        assert tree["good"].resolve() in [e.path for e in entries]  # the allowed folder still serves
    assert option == "--checkpoints" or refused >= 40
