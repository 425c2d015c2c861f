"""A small report writer: titled sections of text, tables and pictures, written as Markdown and as HTML."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from cvcore.io import atomic_write_text

__all__ = ["Report", "rss_mb"]


@dataclass
class _Block:
    kind: str  # "text" | "table" | "image" | "heading" | "code"
    payload: object


@dataclass
class Report:
    """Collect blocks, then :meth:`write` ``report.md`` and ``report.html`` into ``out_dir``.

    Image paths are stored relative to ``out_dir`` so the folder can be moved or zipped as a whole.
    """

    title: str
    out_dir: Path
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(_Block("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", text))

    def code(self, text: str) -> None:
        self.blocks.append(_Block("code", text))

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.blocks.append(_Block("table", (header, rows)))

    def image(self, path: str | Path, caption: str = "") -> None:
        rel = os.path.relpath(Path(path), Path(self.out_dir))
        self.blocks.append(_Block("image", (rel, caption)))

    @staticmethod
    def _fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                lines += [f"## {b.payload}", ""]
            elif b.kind == "text":
                lines += [str(b.payload), ""]
            elif b.kind == "code":
                lines += ["```", str(b.payload), "```", ""]
            elif b.kind == "table":
                header, rows = b.payload
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(self._fmt(v) for v in row) + " |" for row in rows]
                lines.append("")
            elif b.kind == "image":
                rel, caption = b.payload
                lines += [f"![{caption}]({rel})", f"*{caption}*" if caption else "", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        e = html.escape
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                 "img{max-width:100%;border:1px solid #ccc}figure{display:inline-block;margin:.5em;"
                 "max-width:48%;vertical-align:top}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
                 "padding:.25em .6em;text-align:right}pre{background:#f4f4f4;padding:.5em}</style></head><body>",
                 f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b.kind == "heading":
                parts.append(f"<h2>{e(str(b.payload))}</h2>")
            elif b.kind == "text":
                parts.append(f"<p>{e(str(b.payload))}</p>")
            elif b.kind == "code":
                parts.append(f"<pre>{e(str(b.payload))}</pre>")
            elif b.kind == "table":
                header, rows = b.payload
                parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{e(self._fmt(v))}</td>" for v in row) + "</tr>" for row in rows]
                parts.append("</table>")
            elif b.kind == "image":
                rel, caption = b.payload
                parts.append(f"<figure><img src='{e(rel)}' alt='{e(caption)}'><figcaption>{e(caption)}"
                             "</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` (atomically); returns their paths."""
        out = Path(self.out_dir)
        return (atomic_write_text(out / "report.md", self.to_markdown()),
                atomic_write_text(out / "report.html", self.to_html()))


def rss_mb(pid: int | str = "self") -> dict[str, float]:
    """Current and peak resident memory of a process in MiB (``/proc/PID/status`` VmRSS, VmHWM; Linux); {} when the
    process is gone or the file does not exist."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out
