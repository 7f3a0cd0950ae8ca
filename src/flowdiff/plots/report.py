"""A small self-contained HTML report: headings, text, tables and figures (PNG files linked relatively)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from flowdiff.atomic import write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass
class Report:
    """An HTML page assembled from blocks; `write(path)` saves it atomically.

    Figures are PNG files referenced relative to the page, so the report directory can be
    moved or shared as a whole.
    """

    title: str
    blocks: list = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def heading(self, text: str) -> Report:
        """A section heading."""
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str) -> Report:
        """A paragraph of plain text (escaped)."""
        self.blocks.append(f"<p>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> Report:
        """A block of preformatted text (a command, a configuration)."""
        self.blocks.append(f"<pre><code>{html.escape(text)}</code></pre>")
        return self

    def figure(self, image: str | Path, caption: str = "") -> Report:
        """A PNG figure with a caption; `image` is stored relative to the report when written."""
        self.figures.append(Path(image))
        self.blocks.append(("figure", Path(image), caption))  # resolved in `render`
        return self

    def table(self, header: list[str], rows: list[list], caption: str = "") -> Report:
        """A table; numbers are shown with 4 significant digits."""
        def cell(value) -> str:
            if isinstance(value, float):
                return f"{value:.4g}"
            return html.escape(str(value))

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def render(self, directory: Path) -> str:
        """The HTML text, with figure paths relative to `directory` (where the page is written)."""
        parts = []
        for block in self.blocks:
            if isinstance(block, tuple):
                _, image, caption = block
                source = Path(os.path.relpath(Path(image).resolve(), Path(directory).resolve())).as_posix()
                alt = html.escape(caption or image.stem)
                parts.append(
                    f'<figure><img src="{html.escape(source)}" alt="{alt}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            else:
                parts.append(block)
        body = "\n".join(parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page to `path` via a temporary file and os.replace."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        missing = [str(f) for f in self.figures if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"the report refers to figures that do not exist: {missing}")
        return write_text(path, self.render(path.parent))
