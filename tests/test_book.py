"""Tests for ``seqrl.book``: executing tiny chapters and writing the HTML book."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from seqrl.book import build_book, chapter_blurb, chapter_title, latex_to_html

INTRO_BLURB = "A tiny chapter that draws one line."
PLOT = "import matplotlib.pyplot as plt\nplt.plot([0, 1, 2], [0, 1, 4])\nplt.show()"
MATH_MD = r"""## Returns

The return is $G_t = \sum_{k=t}^{T-1} \gamma^{k-t} r_{k+1}$ under $\pi_\theta(a\mid s)$.

$$
\begin{aligned}
\nabla_\theta J(\theta) &= \mathbb E\big[\sum_t \nabla_\theta \log \pi_\theta(a_t\mid s_t)\, G_t\big] \\
&\approx \frac{1}{N} \sum_i \operatorname{clip}(r_i, 1-\epsilon, 1+\epsilon) \text{ on average}
\end{aligned}
$$

Not valid TeX: $x^$.
"""
# A text/latex output (converted to MathML too) and a widget (whose state would load a CDN script).
MATH_CODE = "import ipywidgets\nfrom IPython.display import Math, display\ndisplay(Math(r'\\frac{1}{2}'))\nipywidgets.IntSlider(3)"


def _write(folder: Path, name: str, cells: list) -> Path:
    path = folder / name
    nbformat.write(new_notebook(cells=cells), path)
    return path


def _make_chapters(folder: Path, broken: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text("read via a relative path\n")
    paths = [
        _write(
            folder,
            "00_intro.ipynb",
            [new_markdown_cell(f"# Intro\n\n{INTRO_BLURB}\n\nA second paragraph."), new_code_cell(PLOT)],
        ),
        _write(
            folder,
            "01_more.ipynb",
            [
                new_markdown_cell("# More: a < b & c\n\nPrinting from a **kernel**."),
                new_code_cell("print('hello from chapter one')\nprint(open('data.txt').read())"),
                new_markdown_cell(MATH_MD),
                new_code_cell(MATH_CODE),
            ],
        ),
    ]
    if broken:
        paths.append(
            _write(
                folder,
                "02_broken.ipynb",
                [
                    new_markdown_cell("# Broken\n\nThis one fails."),
                    new_code_cell("print('before the error')"),
                    new_code_cell("raise ValueError('deliberate failure')"),
                    new_code_cell("print('never printed')"),
                ],
            )
        )
    # Checkpoints and non-chapter notebooks are not part of the book.
    (folder / ".ipynb_checkpoints").mkdir(exist_ok=True)
    _write(folder / ".ipynb_checkpoints", "00_intro-checkpoint.ipynb", [new_code_cell("1/0")])
    _write(folder, "scratch.ipynb", [new_code_cell("1/0")])
    return paths


@pytest.fixture(scope="module")
def good_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    paths = _make_chapters(root / "notebooks")
    before = {p: p.read_bytes() for p in paths}
    index = build_book(root / "notebooks", root / "build", timeout=60)
    return index, paths, before


def test_index_lists_chapters(good_book):
    index, _, _ = good_book
    assert index.name == "index.html" and index.is_file()
    text = index.read_text()
    assert "seqrl — RL with Sequence Models and Language Models" in text
    assert 'href="00_intro.html"' in text and 'href="01_more.html"' in text
    assert ">Intro<" in text and INTRO_BLURB in text
    assert "More: a &lt; b &amp; c" in text  # escaped, not raw HTML
    assert "Printing from a kernel." in text  # Markdown stripped from the blurb
    assert "second paragraph" not in text
    assert "failed" not in text.split("<body>", 1)[1].replace("badge.failed", "")
    assert "scratch" not in text and "checkpoint" not in text
    assert "http://" not in text and "https://" not in text  # self-contained


def test_chapter_pages(good_book):
    index, _, _ = good_book
    intro = (index.parent / "00_intro.html").read_text()
    more = (index.parent / "01_more.html").read_text()
    assert "data:image/png;base64," in intro
    assert "hello from chapter one" in more
    assert "read via a relative path" in more  # executed with cwd = notebooks folder
    # Navigation bar: index, previous and next.
    assert 'href="index.html"' in intro and 'href="01_more.html"' in intro
    assert 'href="index.html"' in more and 'href="00_intro.html"' in more
    assert sorted(p.name for p in index.parent.iterdir()) == ["00_intro.html", "01_more.html", "index.html"]


def test_math_rendered_as_mathml_offline(good_book, capsys):
    index, _, _ = good_book
    more = (index.parent / "01_more.html").read_text()
    # Inline and display math from Markdown are MathML elements, not TeX left for MathJax.
    assert more.count('<math display="inline">') >= 2 and more.count('<math display="block">') == 1
    assert "<msubsup><mo>∑</mo>" in more  # \sum_{k=t}^{T-1}
    assert "<mtable" in more and "<mfrac>" in more  # aligned, \frac
    assert '<mi mathvariant="double-struck">E</mi>' in more and "<mo>clip</mo>" in more
    assert "<mtext>\xa0on\xa0average</mtext>" in more  # \text{ on average}
    assert r"\sum_{k=t}" not in more and r"\begin{aligned}" not in more
    # An expression latex2mathml cannot convert is shown as its source; the build goes on.
    assert '<code class="seqrl-tex">$x^$</code>' in more
    # The text/latex output of IPython.display.Math is MathML as well.
    latex_output = more.split('data-mime-type="text/latex"', 1)[1].split("</div>", 1)[0]
    assert "<mfrac>" in latex_output and "frac" not in latex_output.replace("<mfrac>", "").replace("</mfrac>", "")
    # Nothing is fetched from the internet: no MathJax, require.js, Mermaid or widget-manager script.
    for page in index.parent.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"<script[^>]*\ssrc=", text), page.name
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", text), page.name
        assert "mathjax" not in text.lower() and "require.js" not in text and "mermaid" not in text.lower()
        assert "cdnjs" not in text and "unpkg" not in text and "jsdelivr" not in text


@pytest.mark.parametrize(
    "tex",
    [
        r"\frac{a}{b}",
        r"\sum_{k=t}^{T-1}\gamma^{k-t} r_k",
        r"\mathbb E_{\pi}[G]",
        r"\operatorname{softmax}(x)",
        r"\log \pi_\theta(a\mid s)",
        r"\big( x \big) + \big\| y \big\|",
        r"\begin{aligned} a &= b \\ c &= d \end{aligned}",
        r"\text{if } x > 0",
        r"\arg\max_a Q(s, a)",
        r"x \sim p_\theta,\ \mathrm{d}x \label{eq:one}",
    ],
)
def test_latex_to_mathml(tex):
    failures = []
    out = latex_to_html(tex, display=True, failures=failures)
    assert out.startswith('<math display="block">') and out.endswith("</math>"), out
    assert failures == [] and "\\" not in out and "xmlns" not in out


def test_latex_to_mathml_details():
    aligned = latex_to_html(r"\begin{aligned} a &= b \\ c &= d \end{aligned}")
    assert aligned.count("<mtr>") == 2 and "linebreak" not in aligned  # a table, not one line
    assert latex_to_html(r"\frac12").startswith('<math display="inline">')
    assert '<mi mathvariant="normal">d</mi>' in latex_to_html(r"\mathrm{d}x")
    assert "<mo>&#x0223C;</mo>" in latex_to_html(r"x \sim p")
    # \text is escaped: no stray HTML from the TeX source.
    out = latex_to_html(r"\text{a <b> & c}")
    assert "<b>" not in out and "&lt;b&gt;&#x000A0;&amp;&#x000A0;c" in out


@pytest.mark.parametrize("tex", [r"x^", r"\frac{", r"\foo{y}", r"\begin{alignat}{2} a &= b \end{alignat}"])
def test_latex_fallback_shows_source(tex):
    failures = []
    inline = latex_to_html(tex, failures=failures)
    assert inline.startswith('<code class="seqrl-tex">$') and inline.endswith("$</code>")
    assert "<math" not in inline and failures == [tex.strip()]
    display = latex_to_html("<script>" + tex, display=True)
    assert display.startswith('<code class="seqrl-tex seqrl-tex-display">$$&lt;script&gt;')


def test_sources_untouched(good_book):
    _, paths, before = good_book
    for path in paths:
        assert path.read_bytes() == before[path]


def test_failed_chapter_reported_after_writing_everything(tmp_path, capsys):
    paths = _make_chapters(tmp_path / "notebooks", broken=True)
    before = {p: p.read_bytes() for p in paths}
    out = tmp_path / "build"
    with pytest.raises(RuntimeError, match="02_broken") as info:
        build_book(tmp_path / "notebooks", out, timeout=60)
    assert "01_more" not in str(info.value) and "deliberate failure" in str(info.value)
    for name in ("00_intro.html", "01_more.html", "02_broken.html", "index.html"):
        assert (out / name).is_file(), name
    broken = (out / "02_broken.html").read_text()
    assert "failed to execute" in broken
    assert "before the error" in broken and "deliberate failure" in broken
    assert "never printed" in broken  # the source is shown ...
    assert broken.count("never printed") == 1  # ... but it never ran
    index = (out / "index.html").read_text()
    assert 'href="02_broken.html"' in index
    assert index.count('class="badge ok"') == 2 and index.count('class="badge failed"') == 1
    assert "ValueError: deliberate failure" in index
    lines = capsys.readouterr().out.splitlines()
    assert any("02_broken.ipynb" in l and "failed" in l for l in lines)
    assert any("00_intro.ipynb" in l and l.rstrip().endswith("ok") for l in lines)
    for path in paths:
        assert path.read_bytes() == before[path]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_book(tmp_path / "nowhere", tmp_path / "build")


def test_no_chapters(tmp_path):
    _write(tmp_path, "notes.ipynb", [new_code_cell("1")])
    with pytest.raises(ValueError, match=r"no chapters found.*NN|\[0-9\]"):
        build_book(tmp_path, tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_title_and_blurb_extraction():
    nb = new_notebook(
        cells=[
            new_markdown_cell("Some preamble\n\n## Not the title"),
            new_markdown_cell("# The *real* [title](x.html)"),
            new_markdown_cell("## Goals\n\n```python\ncode\n```"),
            new_markdown_cell("We learn `things`. " + "word " * 100),
        ]
    )
    assert chapter_title(nb, "fallback") == "The real title"
    blurb = chapter_blurb(nb)
    assert blurb.startswith("We learn things.") and blurb.endswith("…") and len(blurb) <= 301
    empty = new_notebook(cells=[new_code_cell("1")])
    assert chapter_title(empty, "03_stem") == "03_stem"
    assert chapter_blurb(empty) == ""
