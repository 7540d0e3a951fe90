"""The worked examples of docs/oracle.md and docs/derivation.md are executed, so the docs cannot go stale.

How a document is read (the convention the docs follow):

- every fenced ```python block is written to a file and run with this interpreter, and every
  ```bash block is run by bash with ``refsnn`` and ``python`` defined as this interpreter
  (``sys.executable -m refsnn``), stderr merged into stdout; all blocks of one document run in
  order in one fresh temporary folder, so later blocks read the files earlier ones wrote;
- a ```text block that follows a runnable block with only blank lines between them is that
  block's printed output: the numbers in it must match the numbers printed now to a relative
  1e-9 (the loss is printed with 12 significant digits, gradients with 10), and the words
  between the numbers must match exactly (whitespace runs are compared as one space);
- a runnable block whose previous non-blank line is ``<!-- skip-test -->`` is illustration
  only; a block that imports torch is skipped when torch is not installed (a failure in CI,
  as with ``conftest.require``).

The shipped example (examples/) is checked too: make_example.py reproduces inputs.npz, and the
the oracle command of docs/oracle.md runs on it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import refsnn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/oracle.md", "docs/derivation.md")
RUNNABLE = ("python", "bash")
SKIP_MARKER = "<!-- skip-test -->"
RTOL, ATOL = 1e-9, 1e-12
TIMEOUT = 300                       # seconds per block
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)\b")
FENCE_OPEN = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int                       # 1-based line of the opening fence
    skip: bool                      # marked <!-- skip-test -->
    expected: str | None            # the ```text block that follows, if any


def parse_blocks(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown``, runnable ones paired with their expected output."""
    lines = markdown.splitlines()
    raw = []                        # (lang, code, open_line_index, close_line_index)
    i = 0
    while i < len(lines):
        match = FENCE_OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"unclosed code fence at line {i + 1}"
        raw.append((match.group(1).lower(), "\n".join(lines[i + 1:end]) + "\n", i, end))
        i = end + 1

    blocks = []
    for k, (lang, code, start, end) in enumerate(raw):
        if lang not in RUNNABLE:
            continue
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        expected = None
        if k + 1 < len(raw):
            next_lang, next_code, next_start, _ = raw[k + 1]
            between = lines[end + 1:next_start]
            if next_lang == "text" and all(not line.strip() for line in between):
                expected = next_code
        blocks.append(Block(lang, code, start + 1, previous == SKIP_MARKER, expected))
    return blocks


def tokens(text: str) -> list[tuple[str, object]]:
    """Split printed text into ('num', float) and ('text', str) tokens, whitespace-normalised."""
    out, position = [], 0
    for match in NUMBER.finditer(text):
        words = " ".join(text[position:match.start()].split())
        if words:
            out.append(("text", words))
        out.append(("num", float(match.group())))
        position = match.end()
    words = " ".join(text[position:].split())
    if words:
        out.append(("text", words))
    return out


def compare_output(expected: str, actual: str) -> str | None:
    """None if ``actual`` matches ``expected`` (numbers to RTOL), else a description of the first difference."""
    want, got = tokens(expected), tokens(actual)
    for n, (w, g) in enumerate(zip(want, got)):
        if w[0] != g[0]:
            return f"token {n}: expected {w[0]} {w[1]!r}, got {g[0]} {g[1]!r}"
        if w[0] == "text" and w[1] != g[1]:
            return f"token {n}: expected text {w[1]!r}, got {g[1]!r}"
        if w[0] == "num" and not (math.isclose(w[1], g[1], rel_tol=RTOL, abs_tol=ATOL)
                                  or (math.isnan(w[1]) and math.isnan(g[1]))):
            return f"token {n}: expected number {w[1]!r}, got {g[1]!r}"
    if len(want) != len(got):
        return f"expected {len(want)} tokens, got {len(got)}"
    return None


def run_block(block: Block, folder: Path, number: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHON=sys.executable, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    if block.lang == "python":
        script = folder / f"block_{number:02d}.py"
        script.write_text(block.code)
        command = [sys.executable, script.name]
    else:
        prelude = ('refsnn() { "$PYTHON" -m refsnn "$@"; }\n'
                   'python() { "$PYTHON" "$@"; }\n')
        script = folder / f"block_{number:02d}.sh"
        script.write_text(prelude + block.code)
        command = [shutil.which("bash") or "bash", script.name]
    return subprocess.run(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)


def run_document(relative: str, folder: Path) -> list[Block]:
    """Run every runnable block of a doc in order; return the blocks whose output was checked."""
    blocks = parse_blocks((ROOT / relative).read_text())
    have_torch = find_spec("torch") is not None
    have_bash = shutil.which("bash") is not None
    checked = []
    for number, block in enumerate(blocks):
        if block.skip:
            continue
        if not have_torch and re.search(r"^\s*(import torch|from torch)", block.code, re.M):
            if os.environ.get("CI") == "true":       # as conftest.require: in CI a missing backend fails
                pytest.fail(f"{relative}, block at line {block.line} needs torch, which is not installed")
            continue
        if block.lang == "bash" and not have_bash:
            pytest.skip("bash is not installed")
        result = run_block(block, folder, number)
        where = f"{relative}, {block.lang} block at line {block.line}"
        assert result.returncode == 0, f"{where} failed (exit {result.returncode}):\n{result.stdout}"
        if block.expected is not None:
            problem = compare_output(block.expected, result.stdout)
            assert problem is None, (f"{where}: printed output differs from the document ({problem})\n"
                                     f"--- document:\n{block.expected}--- now:\n{result.stdout}")
            checked.append(block)
    return checked


# ----------------------------------------------------------------------------- the parser itself

def test_parse_blocks_pairs_outputs_and_honours_skip_marker():
    markdown = ("text\n```python\nprint(1)\n```\n\n```text\n1\n```\n"
                "<!-- skip-test -->\n```bash\nexit 1\n```\n"
                "```python\nx = 1\n```\nprose between\n```text\nnot an output\n```\n")
    blocks = parse_blocks(markdown)
    assert [(b.lang, b.skip, b.expected) for b in blocks] == [
        ("python", False, "1\n"), ("bash", True, None), ("python", False, None)]


def test_compare_output_is_strict_on_words_and_tolerant_on_digits():
    assert compare_output("loss 1.40830230713; 13 params", "loss 1.408302307131;  13 params\n") is None
    assert compare_output("loss 1.4083", "loss 1.4084") is not None
    assert compare_output("loss 1.4083", "lost 1.4083") is not None
    assert compare_output("a 1 2", "a 1") is not None


# ----------------------------------------------------------------------------- the documents

def test_oracle_doc_worked_example_runs_and_prints_what_the_doc_says(tmp_path):
    checked = run_document("docs/oracle.md", tmp_path)
    cli_blocks = [b for b in checked if b.lang == "bash" and "refsnn grad" in b.code]
    assert cli_blocks, "docs/oracle.md must show a `refsnn grad` command with its printed output"
    assert len(checked) >= 4

    # Independent of the printed text: the files the example wrote give the loss the doc prints.
    printed = re.search(r"^loss ([0-9.eE+-]+); gradients of", "".join(b.expected for b in cli_blocks), re.M)
    assert printed, "docs/oracle.md must show the CLI's 'loss ...; gradients of ...' line"
    spec = json.loads((tmp_path / "spec.json").read_text())
    with np.load(tmp_path / "inputs.npz") as inputs, np.load(tmp_path / "params.npz") as params:
        result = refsnn.grad(spec, inputs["x"], inputs["target"], dict(params))
    assert float(printed.group(1)) == pytest.approx(float(result["loss"]), rel=1e-10)
    with np.load(tmp_path / "out.npz") as out:
        assert float(out["loss"]) == float(result["loss"])


def test_derivation_doc_checks_run_and_print_what_the_doc_says(tmp_path):
    checked = run_document("docs/derivation.md", tmp_path)
    assert len(checked) >= 2, "docs/derivation.md must contain its executed checks with their output"


# ----------------------------------------------------------------------------- examples/

def test_make_example_reproduces_the_shipped_inputs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples/make_example.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "inputs.npz") as made, np.load(ROOT / "examples/inputs.npz") as shipped:
        assert sorted(made.files) == sorted(shipped.files) == ["target", "x"]
        for key in ("x", "target"):
            np.testing.assert_array_equal(made[key], shipped[key], err_msg=key)
        assert shipped["x"].shape == (100, 1, 50) and shipped["target"].shape == (100, 1, 1)


def test_example_spec_is_the_papers_toy_neuron():
    spec = refsnn.parse_spec(json.loads((ROOT / "examples/spec.json").read_text())).to_dict()
    expected = {
        "input_shape": [50], "architecture": "1",
        "neuron": {"tau_m": 6.0, "tau_s": 2.0, "theta": 1.0},
        "surrogate": {"name": "sigmoid", "T": 0.3},
        "reset_grad": "full", "forward": "hard",
        "loss": {"name": "van_rossum", "tau": 2.0}, "input_trace": True}
    assert {key: spec[key] for key in expected} == expected


def test_shipped_example_command_runs(tmp_path):
    out = tmp_path / "out.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "refsnn", "grad", "examples/spec.json",
                             "examples/inputs.npz", "--adjoints", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loss ") and result.stderr == ""
    spec = json.loads((ROOT / "examples/spec.json").read_text())
    with np.load(ROOT / "examples/inputs.npz") as inputs:
        expected = refsnn.grad(spec, inputs["x"], inputs["target"], seed=0, adjoints=True)
    with np.load(out) as written:
        assert sorted(written.files) == sorted(expected)
        assert written["grad/layers.0.weight"].shape == (1, 50) and written["U/0"].shape == (100, 1, 1)
        for key, value in expected.items():
            np.testing.assert_array_equal(written[key], value, err_msg=key)
