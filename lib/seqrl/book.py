"""Build the HTML book: execute every chapter notebook and write one self-contained page per chapter.

``build_book(notebooks_dir, out_dir)`` (behind ``seqrl book`` / ``make book``):

1. finds the chapters ``NN_*.ipynb`` in ``notebooks_dir`` (sorted by name);
2. executes each one *in memory* with nbclient (working directory ``notebooks_dir``, so relative
   paths behave as in JupyterLab). The notebook files on disk are only read, never written;
3. exports each executed copy to ``out_dir/<stem>.html`` with nbconvert's ``HTMLExporter``. Figures
   are inline base64 PNGs and the LaTeX math of Markdown cells (``$...$``, ``$$...$$``,
   ``\\begin{align}...``) and of ``text/latex`` outputs is converted to MathML with
   ``latex2mathml`` at export time, so browsers render it natively: every page is self-contained,
   with no JavaScript and no request to a CDN (the lab template's require.js, MathJax, Mermaid and
   widget-manager script tags are left out). An expression that cannot be converted is shown as
   its TeX source in a ``<code>`` element. A small navigation bar (index, previous, next) is
   inserted at the top of every page;
4. writes ``out_dir/index.html``: title, introduction and a table of contents with each chapter's
   title, blurb, execution time and status.

A chapter that fails to execute does not stop the book: its page is written with everything that
ran, the error output and a banner naming the failure. Once every page and the index are written,
``build_book`` raises a ``RuntimeError`` listing the failed chapters, so ``make book`` exits
non-zero.
"""
from __future__ import annotations

import copy
import datetime as _dt
import functools
import html
import re
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "BOOK_TITLE",
    "ChapterResult",
    "build_book",
    "find_chapters",
    "chapter_title",
    "chapter_blurb",
    "latex_to_html",
]

BOOK_TITLE = "seqrl — RL with Sequence Models and Language Models"
BOOK_INTRO = (
    "A runnable textbook on reinforcement learning with sequence models and language models. "
    "Every chapter is a Jupyter notebook that was executed from top to bottom to produce the page "
    "you are about to read: the numbers, tables and figures are the output of the code shown next "
    "to them. To run and change the chapters yourself, open the notebooks/ folder of the "
    "repository in JupyterLab"
)
BOOK_INTRO_COMMAND = "make lab"
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
BLURB_CHARS = 300

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)


@dataclass
class ChapterResult:
    """What the book records about one chapter."""

    path: Path
    title: str
    blurb: str
    seconds: float
    error: str | None = None

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def number(self) -> str:
        return self.stem.split("_", 1)[0]

    @property
    def page(self) -> str:
        return f"{self.stem}.html"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


# --------------------------------------------------------------------------------------------
# Finding chapters and reading their titles
# --------------------------------------------------------------------------------------------


def find_chapters(notebooks_dir: Path) -> list[Path]:
    """The chapter notebooks ``NN_*.ipynb`` directly inside ``notebooks_dir``, sorted by name.

    Raises ``FileNotFoundError`` if the folder does not exist and ``ValueError`` if it holds no
    chapter. Checkpoint copies (``.ipynb_checkpoints/``, ``*-checkpoint.ipynb``) are ignored.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks folder not found: {notebooks_dir}")
    chapters = sorted(
        p
        for p in notebooks_dir.glob(CHAPTER_GLOB)
        if p.is_file() and not p.stem.endswith("-checkpoint") and ".ipynb_checkpoints" not in p.parts
    )
    if not chapters:
        raise ValueError(f"no chapters found in {notebooks_dir}: expected notebooks named {CHAPTER_GLOB}")
    return chapters


def _markdown_sources(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]


def chapter_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The text of the first level-1 Markdown heading (``# Title``), else ``fallback``."""
    for source in _markdown_sources(nb):
        for line in source.splitlines():
            if line.startswith("# "):
                title = _plain_text(line[2:])
                if title:
                    return title
    return fallback


def chapter_blurb(nb: nbformat.NotebookNode, limit: int = BLURB_CHARS) -> str:
    """The first paragraph after the first ``# `` heading, as plain text truncated to ``limit``.

    Headings, code fences, tables and HTML blocks are skipped; the blurb is ``""`` when no
    paragraph follows the heading.
    """
    seen_heading = False
    for source in _markdown_sources(nb):
        for block in _blocks(source):
            first = block.lstrip()
            if not seen_heading:
                if any(line.startswith("# ") for line in block.splitlines()):
                    seen_heading = True
                    # The heading may share its block with the paragraph below it.
                    rest = "\n".join(l for l in block.splitlines() if not l.lstrip().startswith("#"))
                    if rest.strip():
                        return _truncate(_plain_text(rest), limit)
                continue
            if first.startswith(("#", "```", "~~~", "|", "<", "---", "***", "$$")):
                continue
            text = _plain_text(block)
            if text:
                return _truncate(text, limit)
    return ""


def _blocks(source: str) -> list[str]:
    """Split Markdown into blank-line separated blocks."""
    return [b for b in re.split(r"\n\s*\n", source) if b.strip()]


def _plain_text(markdown: str) -> str:
    """A rough Markdown-to-text conversion, good enough for titles and blurbs."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", markdown)  # images -> alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links -> link text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"`([^`]*)`", r"\1", text)  # inline code
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)  # bold
    text = re.sub(r"(?<![\w*])[*_]([^*_\n]+)[*_](?![\w*])", r"\1", text)  # italics
    text = re.sub(r"^\s*(?:>+|[-*+]\s|\d+\.\s)\s*", "", text, flags=re.MULTILINE)  # quotes, lists
    return " ".join(text.split())


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.")
    return cut + "…"


# --------------------------------------------------------------------------------------------
# Executing and exporting one chapter
# --------------------------------------------------------------------------------------------


def _check_kernel(kernel_name: str) -> None:
    """Fail early, with a helpful message, if ``kernel_name`` is not an installed Jupyter kernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        raise RuntimeError(
            f"Jupyter kernel {kernel_name!r} not found; install ipykernel in this environment "
            f"(it provides 'python3') or pass another kernel_name"
        ) from exc


def _error_summary(exc: BaseException) -> str:
    """A one-line description of why a chapter failed (exception name and message, no ANSI codes)."""
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    if ename:
        summary = f"{ename}: {evalue}" if evalue else str(ename)
    else:
        lines = [l for l in str(exc).strip().splitlines() if l.strip()]
        summary = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return _ANSI.sub("", summary).strip()


def execute_notebook(
    nb: nbformat.NotebookNode, cwd: Path, timeout: int, kernel_name: str
) -> tuple[nbformat.NotebookNode, str | None]:
    """Execute a copy of ``nb`` in ``cwd``; returns the executed copy and an error summary or ``None``.

    Stale outputs are cleared first, so a failed run never shows results from an earlier session.
    On failure the copy holds the outputs of every cell that ran, the failing cell's error included.
    """
    from nbclient import NotebookClient

    work = copy.deepcopy(nb)
    for cell in work.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        work,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        return work, _error_summary(exc)
    return work, None


# --------------------------------------------------------------------------------------------
# Math: LaTeX to MathML at export time (no MathJax, no network)
# --------------------------------------------------------------------------------------------

# Environments latex2mathml lays out badly (``aligned`` and ``gathered`` become one line with an
# ``&`` and an unsupported line break), rewritten to ones it turns into a <mtable>.
_ENV_REWRITES = [
    (re.compile(r"\\(begin|end)\{aligned\}"), r"\\\1{align*}"),
    (re.compile(r"\\begin\{gather(?:ed|\*)?\}"), r"\\begin{array}{c}"),
    (re.compile(r"\\end\{gather(?:ed|\*)?\}"), r"\\end{array}"),
]
_TEX_DROP = re.compile(r"\\label\{[^{}]*\}|\\(?:nonumber|notag)(?![A-Za-z])")
_TEX_ARG = re.compile(r"\\arg(?![A-Za-z])")  # unknown to latex2mathml
_TEX_MATHRM_CHAR = re.compile(r"\\mathrm\s*\{\s*([A-Za-z0-9])\s*\}")  # {d} loses "upright"
_MATHML_XMLNS = ' xmlns="http://www.w3.org/1998/Math/MathML"'  # implied in HTML; ElementTree
# (nbconvert's heading anchors) would otherwise rewrite <math> as <ns0:math>.
_MTEXT = re.compile(r"(<mtext[^>]*>)(.*?)(</mtext>)", re.DOTALL)
_BARE_AMP = re.compile(r"&(?!#x?[0-9A-Fa-f]+;|[A-Za-z]+;)")
# Delimiters after \big, \Big, ... that latex2mathml leaves as TeX source inside <mo>.
_MO_DELIMITERS = {
    r"\{": "{", r"\}": "}", r"\lbrace": "{", r"\rbrace": "}", r"\|": "‖", r"\Vert": "‖",
    r"\lVert": "‖", r"\rVert": "‖", r"\vert": "|", r"\lvert": "|", r"\rvert": "|",
    r"\langle": "⟨", r"\rangle": "⟩", r"\lfloor": "⌊", r"\rfloor": "⌋", r"\lceil": "⌈",
    r"\rceil": "⌉", r"\lbrack": "[", r"\rbrack": "]", r"\uparrow": "↑", r"\downarrow": "↓",
}
_MO_TEX = re.compile(r"(<mo[^>]*>)(\\[A-Za-z]+|\\[{}|])(</mo>)")

_MATH_CSS = """
math{font-family:"Latin Modern Math","STIX Two Math","Cambria Math","Libertinus Math",math}
math[display="block"]{margin:.7em 0;overflow-x:auto;overflow-y:hidden}
code.seqrl-tex{white-space:pre-wrap}
code.seqrl-tex-display{display:block;margin:.7em 0;text-align:center}
"""


def _prepare_tex(tex: str) -> str:
    tex = _TEX_DROP.sub("", tex)
    tex = _TEX_ARG.sub(r"\\operatorname{arg}", tex)
    tex = _TEX_MATHRM_CHAR.sub(r"\\mathrm \1", tex)
    for pattern, replacement in _ENV_REWRITES:
        tex = pattern.sub(replacement, tex)
    return tex


def _escape_mtext(match: re.Match) -> str:
    text = _BARE_AMP.sub("&amp;", match.group(2)).replace("<", "&lt;").replace(">", "&gt;")
    return match.group(1) + text + match.group(3)


def _fix_mo(match: re.Match) -> str:
    char = _MO_DELIMITERS.get(match.group(2))
    return match.group(0) if char is None else f"{match.group(1)}&#x{ord(char):X};{match.group(3)}"


@functools.lru_cache(maxsize=4096)  # chapters repeat $\gamma$, $\pi_\theta$, ...
def _mathml(tex: str, display: bool) -> str | None:
    """MathML for ``tex``, or ``None`` if latex2mathml cannot convert it faithfully."""
    from latex2mathml.converter import convert

    try:
        mathml = convert(_prepare_tex(tex), display="block" if display else "inline")
    except Exception:  # latex2mathml raises its own errors, but also IndexError, KeyError, ...
        return None
    mathml = mathml.replace(_MATHML_XMLNS, "", 1)
    mathml = mathml.replace("<mi>&#x0007E;</mi>", "<mo>&#x0223C;</mo>")  # \sim is a relation
    mathml = _MO_TEX.sub(_fix_mo, mathml)
    mathml = _MTEXT.sub(_escape_mtext, mathml)  # \text{a < b} is copied verbatim
    if "\\" in mathml:  # an unknown command, e.g. <mi>\foo</mi>: not rendered faithfully
        return None
    try:
        ElementTree.fromstring(mathml)  # well-formed, e.g. no bare "&" from a stray alignment
    except ElementTree.ParseError:
        return None
    return mathml


def latex_to_html(tex: str, display: bool = False, failures: list[str] | None = None) -> str:
    """HTML for one math expression (without its ``$`` delimiters): a ``<math>`` element.

    If latex2mathml cannot convert ``tex`` (a syntax error, an unknown command, ...), the TeX
    source is shown in a ``<code class="seqrl-tex">`` element instead and appended to ``failures``.
    """
    mathml = _mathml(tex, display)
    if mathml is not None:
        return mathml
    if failures is not None:
        failures.append(tex.strip())
    delim = "$$" if display else "$"
    css = "seqrl-tex seqrl-tex-display" if display else "seqrl-tex"
    return f'<code class="{css}">{html.escape(delim + tex.strip() + delim, quote=False)}</code>'


_LATEX_OUTPUT_MATH = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<db>.+?)\\\]|(?<!\\)\$(?P<i>.+?)(?<!\\)\$|\\\((?P<ip>.+?)\\\)"
    r"|(?P<env>\\begin\{(?P<name>[A-Za-z]+\*?)\}.*?\\end\{(?P=name)\})",
    re.DOTALL,
)


def _latex_output_to_html(source: str, failures: list[str] | None = None) -> str:
    """HTML for a ``text/latex`` output (e.g. ``IPython.display.Math``): math to MathML, rest escaped."""
    parts, pos = [], 0
    for m in _LATEX_OUTPUT_MATH.finditer(source):
        parts.append(html.escape(source[pos : m.start()], quote=False))
        inline = m.group("i") if m.group("i") is not None else m.group("ip")
        if inline is not None:
            parts.append(latex_to_html(inline, display=False, failures=failures))
        else:
            body = next(g for g in (m.group("dd"), m.group("db"), m.group("env")) if g is not None)
            parts.append(latex_to_html(body, display=True, failures=failures))
        pos = m.end()
    parts.append(html.escape(source[pos:], quote=False))
    return "".join(parts)


# The lab template without its CDN scripts: require.js (not needed for static output), MathJax
# (math is MathML), Mermaid and the Jupyter widgets manager (their state is dropped before export,
# so widget outputs fall back to their text). text/latex outputs are converted to MathML too.
_BOOK_TEMPLATE_NAME = "seqrl_book.html.j2"
_BOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}<style type="text/css">{{ resources.seqrl_math_css }}</style>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | latex_output2html }}
</div>
{%- endblock data_latex %}
"""


def _book_exporter(math_failures: list[str] | None = None):
    """An ``HTMLExporter`` whose pages render math as MathML and load nothing from the internet."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class MathMLRenderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return latex_to_html(body, display=True, failures=math_failures)

        def inline_math(self, body: str) -> str:
            return latex_to_html(body, display=False, failures=math_failures)

        def latex_environment(self, name: str, body: str) -> str:
            tex = f"\\begin{{{name}}}{body}\\end{{{name}}}"
            return latex_to_html(tex, display=True, failures=math_failures)

    class BookExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            path = context.get("resources", {}).get("metadata", {}).get("path", "")
            renderer = MathMLRenderer(
                escape=False,
                attachments=cell.get("attachments", {}),
                embed_images=self.embed_images,
                path=path,
                anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=self.exclude_anchor_links,
                **getattr(self, "lexer_options", {}),
            )
            return MarkdownWithMath(renderer=renderer).render(source)

        def default_filters(self):
            yield from super().default_filters()
            yield ("latex_output2html", lambda source: _latex_output_to_html(source, math_failures))

    exporter = BookExporter(
        extra_loaders=[DictLoader({_BOOK_TEMPLATE_NAME: _BOOK_TEMPLATE})],
        template_file=_BOOK_TEMPLATE_NAME,
    )
    exporter.embed_images = True  # Markdown images (![](fig.png)) too, not only outputs
    return exporter


def export_html(nb: nbformat.NotebookNode, source_dir: Path, math_failures: list[str] | None = None) -> str:
    """Export an executed notebook to a standalone HTML string.

    Images are inlined as base64 and math is MathML, so the page needs neither its folder nor a
    network. TeX that could not be converted is appended to ``math_failures`` (shown as source).
    """
    nb = copy.copy(nb)
    # Widget state would make the page fetch the widget manager from a CDN; without it, widget
    # outputs show their text representation (a static page cannot run widgets anyway).
    nb.metadata = nbformat.NotebookNode({k: v for k, v in nb.metadata.items() if k != "widgets"})
    exporter = _book_exporter(math_failures)
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"path": str(source_dir)}, "seqrl_math_css": _MATH_CSS}
    )
    return body


# --------------------------------------------------------------------------------------------
# HTML: navigation bar, error banner, index page
# --------------------------------------------------------------------------------------------

_NAV_CSS = """
.seqrl-nav{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 display:flex;gap:1.5em;justify-content:space-between;align-items:center;padding:.6em 1.2em;
 background:#1f2a44;color:#fff;position:sticky;top:0;z-index:1000}
.seqrl-nav a{color:#fff;text-decoration:none}
.seqrl-nav a:hover{text-decoration:underline}
.seqrl-nav .seqrl-muted{opacity:.45}
.seqrl-banner{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:1em 1.2em;padding:.8em 1.1em;border-left:5px solid #c0392b;background:#fdecea;color:#611a15}
.seqrl-banner code{white-space:pre-wrap}
"""


def _nav_link(target: ChapterResult | None, label: str) -> str:
    if target is None:
        return f'<span class="seqrl-muted">{html.escape(label)}</span>'
    text = f"{label} {target.number} {target.title}" if label.startswith("←") else f"{target.number} {target.title} {label}"
    return f'<a href="{html.escape(target.page, quote=True)}">{html.escape(text)}</a>'


def nav_bar(prev: ChapterResult | None, nxt: ChapterResult | None) -> str:
    """The navigation bar put at the top of each chapter page."""
    return (
        f"<style>{_NAV_CSS}</style>\n"
        '<nav class="seqrl-nav">'
        '<a href="index.html">☰ Contents</a>'
        f"{_nav_link(prev, '← previous')}"
        f"{_nav_link(nxt, 'next →')}"
        "</nav>\n"
    )


def error_banner(chapter: ChapterResult) -> str:
    """A banner saying that the chapter did not execute to the end, and why."""
    return (
        '<div class="seqrl-banner"><strong>This chapter failed to execute.</strong> '
        "The page shows the cells that ran, up to and including the failing cell; later cells "
        f"have no output.<br><code>{html.escape(chapter.error or '')}</code></div>\n"
    )


def insert_after_body(page: str, snippet: str) -> str:
    """Insert ``snippet`` right after the opening ``<body>`` tag (or at the start if there is none)."""
    match = _BODY_OPEN.search(page)
    if match is None:
        return snippet + page
    return page[: match.end()] + "\n" + snippet + page[match.end() :]


_INDEX_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f7fb;color:#1d2330;
 font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header{background:linear-gradient(135deg,#1f2a44,#34507a);color:#fff;padding:3em 1.5em 2.5em}
header .inner,main{max-width:860px;margin:0 auto}
h1{margin:0 0 .4em;font-size:2.1em;line-height:1.2;font-weight:700}
header p{margin:0;opacity:.9;max-width:46em}
header code{background:rgba(255,255,255,.15);padding:.1em .35em;border-radius:4px}
main{padding:2em 1.5em 3em}
h2{font-size:1.1em;text-transform:uppercase;letter-spacing:.08em;color:#5a6478;margin:0 0 1em}
ol.toc{list-style:none;margin:0;padding:0}
ol.toc li{display:flex;gap:1.2em;background:#fff;border:1px solid #e3e6ee;border-radius:10px;
 padding:1em 1.2em;margin-bottom:.9em;box-shadow:0 1px 2px rgba(20,30,60,.05)}
ol.toc li:hover{border-color:#9fb3d9}
.num{font:600 1.5em/1.2 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#34507a;min-width:2.2em}
.body{flex:1;min-width:0}
.title{font-size:1.15em;font-weight:600;color:#1f2a44;text-decoration:none}
.title:hover{text-decoration:underline}
.blurb{margin:.3em 0 .5em;color:#3c4557}
.meta{font-size:.85em;color:#6b7488;display:flex;gap:1em;align-items:center}
.badge{display:inline-block;padding:.05em .6em;border-radius:999px;font-weight:600;font-size:.9em}
.badge.ok{background:#e3f4e8;color:#1e7b3c}
.badge.failed{background:#fdecea;color:#b3261e}
.err{color:#b3261e;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;
 overflow-wrap:anywhere}
footer{max-width:860px;margin:0 auto;padding:0 1.5em 2em;font-size:.85em;color:#6b7488}
"""


def _toc_entry(chapter: ChapterResult) -> str:
    e = html.escape
    error = f'<div class="err">{e(chapter.error)}</div>' if chapter.error else ""
    return (
        "<li>"
        f'<div class="num">{e(chapter.number)}</div>'
        '<div class="body">'
        f'<a class="title" href="{e(chapter.page, quote=True)}">{e(chapter.title)}</a>'
        f'<p class="blurb">{e(chapter.blurb)}</p>'
        '<div class="meta">'
        f'<span class="badge {e(chapter.status)}">{e(chapter.status)}</span>'
        f"<span>executed in {chapter.seconds:.1f} s</span>"
        f"<span>{e(chapter.path.name)}</span>"
        f"</div>{error}</div>"
        "</li>"
    )


def render_index(chapters: list[ChapterResult]) -> str:
    """The book's front page: title, introduction and table of contents (self-contained HTML)."""
    e = html.escape
    total = sum(c.seconds for c in chapters)
    failed = sum(not c.ok for c in chapters)
    built = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary = f"{len(chapters)} chapters, executed in {total:.1f} s"
    if failed:
        summary += f", {failed} failed"
    entries = "\n".join(_toc_entry(c) for c in chapters)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(BOOK_TITLE)}</title>
<style>{_INDEX_CSS}</style>
</head>
<body>
<header><div class="inner">
<h1>{e(BOOK_TITLE)}</h1>
<p>{e(BOOK_INTRO)} (<code>{e(BOOK_INTRO_COMMAND)}</code>).</p>
</div></header>
<main>
<h2>Contents</h2>
<ol class="toc">
{entries}
</ol>
</main>
<footer>{e(summary)} · built {e(built)}</footer>
</body>
</html>
"""


# --------------------------------------------------------------------------------------------
# The whole book
# --------------------------------------------------------------------------------------------


def _read_chapter(path: Path) -> tuple[nbformat.NotebookNode, ChapterResult]:
    """Read a chapter (never written back) and its title and blurb; it has not run yet."""
    nb = nbformat.read(path, as_version=4)
    return nb, ChapterResult(path, chapter_title(nb, path.stem), chapter_blurb(nb), seconds=0.0)


def build_book(
    notebooks_dir: Path, out_dir: Path, timeout: int = 600, kernel_name: str = "python3"
) -> Path:
    """Execute every chapter in ``notebooks_dir`` and write the HTML book to ``out_dir``.

    ``timeout`` is the limit in seconds for each cell. Returns the path of ``out_dir/index.html``.
    Raises ``RuntimeError`` naming the failed chapters after the whole book has been written.
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    out_dir = Path(out_dir)
    paths = find_chapters(notebooks_dir)
    _check_kernel(kernel_name)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Titles first: each page's navigation bar names its neighbours.
    chapters = [_read_chapter(p) for p in paths]
    results = [result for _, result in chapters]
    width = max(len(p.name) for p in paths)
    for i, (nb, result) in enumerate(chapters):
        start = time.perf_counter()
        executed, result.error = execute_notebook(nb, notebooks_dir, timeout, kernel_name)
        result.seconds = time.perf_counter() - start
        line = f"[{i + 1}/{len(paths)}] {result.path.name:<{width}}  {result.seconds:7.1f} s  {result.status}"
        print(line + (f"  ({result.error})" if result.error else ""), flush=True)

        prev = results[i - 1] if i > 0 else None
        nxt = results[i + 1] if i + 1 < len(results) else None
        snippet = nav_bar(prev, nxt) + ("" if result.ok else error_banner(result))
        math_failures: list[str] = []
        page = insert_after_body(export_html(executed, notebooks_dir, math_failures), snippet)
        (out_dir / result.page).write_text(page, encoding="utf-8")
        for tex in math_failures:
            print(f"    math not converted to MathML, shown as TeX: {_truncate(tex, 80)}", flush=True)

    index = out_dir / "index.html"
    index.write_text(render_index(results), encoding="utf-8")
    print(f"wrote {index}", flush=True)

    failed = [r for r in results if not r.ok]
    if failed:
        details = "\n".join(f"  {r.path.name}: {r.error}" for r in failed)
        raise RuntimeError(f"{len(failed)} of {len(results)} chapters failed to execute:\n{details}")
    return index
