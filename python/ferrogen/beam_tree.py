"""The tree of every hypothesis a beam search kept, to see why the winner won.

``generate(..., num_beams=4, output_beam_tree=True)`` (which implies ``return_dict_in_generate``)
returns ``output.beam_tree``: a :class:`BeamForest` with one :class:`BeamTree` per
batch item. Each node is one generated token of a kept hypothesis::

    tree = out.beam_tree[0]
    tree.to_dict()                         # plain data (JSON-serialisable)
    tree.to_dot(tokenizer)                 # Graphviz source; no dependency
    tree.save("tree.html", tokenizer)      # self-contained HTML with an SVG drawing
    graph = tree.to_networkx()             # a networkx.DiGraph, if networkx is installed

Node status: ``winner`` (on the best returned hypothesis), ``returned`` (on another
returned one), ``kept`` (on a hypothesis that survived to the end but was not
returned), ``pruned`` (no descendant survived). ``finished`` marks the last token of a
hypothesis that ended (EOS, max length or a stopping criterion) and entered the
finished set, possibly evicted later by better ones.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["BeamForest", "BeamNode", "BeamTree"]

_COLORS = {"winner": "#1a7f37", "returned": "#0969da", "kept": "#6e7781", "pruned": "#d0d7de"}
_FINISHED_BORDER = "#cf222e"
# what each colour means, in the drawing's legend (and the README's)
_MEANINGS = {"winner": "the best returned sequence", "returned": "another returned sequence",
             "kept": "kept to the end, not returned", "pruned": "pruned (no descendant survived)"}
_LEGEND_WIDTH, _LEGEND_HEIGHT = 860, 62


@dataclass
class BeamNode:
    id: int
    parent: Optional[int]
    token: int
    step: int
    score: float
    """Cumulative log-probability of the hypothesis up to this token."""
    status: str
    finished: bool = False
    final_score: Optional[float] = None
    """Length-normalised score, when this token ended a finished hypothesis."""
    end: Optional[str] = None
    """Why the hypothesis ended here: ``eos``, ``length`` or ``stop``."""
    rank: Optional[int] = None
    """Rank among the returned sequences (0 = the winner) when this token ends one."""
    beam: int = 0
    """Beam (row within the batch item) this token extended."""
    group: int = 0


@dataclass
class BeamTree:
    """The kept hypotheses of one batch item; the prompt is the root."""

    prompt: list[int]
    nodes: list[BeamNode] = field(default_factory=list)

    @classmethod
    def from_core(
        cls, columns: dict[str, Any], prompt: torch.Tensor, returned: np.ndarray, per_item: int, beams: int
    ) -> "BeamForest":
        """Splits the core's node columns into one tree per batch item."""
        batch = int(prompt.shape[0])
        n = len(columns["token"])
        ranks: dict[int, int] = {int(node): i % per_item for i, node in enumerate(returned) if node >= 0}
        winners = {int(node) for i, node in enumerate(returned) if node >= 0 and i % per_item == 0}
        parent = columns["parent"]
        status = np.where(columns["kept"], "kept", "pruned").astype(object)
        for ends, label in ((set(ranks), "returned"), (winners, "winner")):
            for end in ends:
                cur = end
                while cur >= 0:
                    status[cur] = label
                    cur = int(parent[cur])
        trees = [cls(prompt=prompt[b].tolist()) for b in range(batch)]
        local: dict[int, int] = {}
        for i in range(n):
            b = int(columns["batch"][i])
            tree = trees[b]
            local[i] = len(tree.nodes)
            p = int(parent[i])
            final = float(columns["final_score"][i])
            end = columns["end"][i]
            tree.nodes.append(BeamNode(
                id=local[i], parent=None if p < 0 else local[p], token=int(columns["token"][i]),
                step=int(columns["step"][i]), score=float(columns["score"][i]), status=str(status[i]),
                finished=end != "running", final_score=None if np.isnan(final) else final,
                end=None if end == "running" else end, rank=ranks.get(i), beam=int(columns["parent_row"][i]) % beams,
                group=int(columns["group"][i]),
            ))
        return BeamForest(trees)

    # ---- views -------------------------------------------------------------------------

    def children(self) -> dict[Optional[int], list[int]]:
        kids: dict[Optional[int], list[int]] = {}
        for node in self.nodes:
            kids.setdefault(node.parent, []).append(node.id)
        return kids

    def path(self, node_id: int) -> list[BeamNode]:
        """Nodes from the first generated token to ``node_id``."""
        out = []
        cur: Optional[int] = node_id
        while cur is not None:
            out.append(self.nodes[cur])
            cur = self.nodes[cur].parent
        return out[::-1]

    def winner(self) -> Optional[BeamNode]:
        return next((n for n in self.nodes if n.rank == 0), None)

    def to_dict(self) -> dict[str, Any]:
        """``{"prompt": [...], "nodes": [{id, parent, token, step, score, status, ...}]}``."""
        return {"prompt": list(self.prompt), "nodes": [asdict(n) for n in self.nodes]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_dot(self, tokenizer: Any = None, include_pruned: bool = True) -> str:
        """Graphviz source: one box per token, coloured by status; finished hypotheses
        are drawn with a double border and their final score."""
        lines = ["digraph beam_tree {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
                 f'  root [label="{_dot_label([_text(tokenizer, self.prompt, prompt=True)])}", fillcolor="#f6f8fa"];']
        shown = {n.id for n in self.nodes if include_pruned or n.status != "pruned"}
        for n in self.nodes:
            if n.id not in shown:
                continue
            parts = [_text(tokenizer, [n.token]), f"{n.score:.3f}"]
            if n.final_score is not None:
                parts.append(f"final {n.final_score:.3f} ({n.end})")
            if n.rank is not None:
                parts.append(f"returned #{n.rank}")
            color = _COLORS[n.status]
            font = "white" if n.status in ("winner", "returned") else "black"
            extra = ", peripheries=2" if n.finished else ""
            lines.append(f'  n{n.id} [label="{_dot_label(parts)}", fillcolor="{color}", fontcolor="{font}"{extra}];')
            src = "root" if n.parent is None else f"n{n.parent}"
            lines.append(f"  {src} -> n{n.id};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_networkx(self) -> Any:
        """A ``networkx.DiGraph`` (node attributes as in :meth:`to_dict`; root ``"root"``)."""
        import networkx as nx  # optional dependency, imported only here

        g = nx.DiGraph()
        g.add_node("root", prompt=list(self.prompt))
        for n in self.nodes:
            g.add_node(n.id, **asdict(n))
            g.add_edge("root" if n.parent is None else n.parent, n.id)
        return g

    def to_svg(self, tokenizer: Any = None, include_pruned: bool = True) -> str:
        """A standalone SVG drawing: steps left to right, one row per leaf, hover for details."""
        nodes = [n for n in self.nodes if include_pruned or n.status != "pruned"]
        kids: dict[Optional[int], list[BeamNode]] = {}
        for n in nodes:
            kids.setdefault(n.parent, []).append(n)
        for siblings in kids.values():
            siblings.sort(key=lambda n: -n.score)
        y: dict[Optional[int], float] = {}
        next_row = [0]

        def place(nid: Optional[int]) -> float:
            children = kids.get(nid, [])
            if not children:
                y[nid] = next_row[0]
                next_row[0] += 1
            else:
                ys = [place(c.id) for c in children]
                y[nid] = (ys[0] + ys[-1]) / 2
            return y[nid]

        place(None)
        dx, dy, w, h = 120, 34, 100, 26
        depth = max((n.step for n in nodes), default=0) + 2
        tree_height = max(1, next_row[0]) * dy + 10
        width, height = max(depth * dx + 20, _LEGEND_WIDTH), tree_height + _LEGEND_HEIGHT

        def pos(nid: Optional[int]) -> tuple[float, float]:
            step = -1 if nid is None else self.nodes[nid].step
            return 10 + (step + 1) * dx, 10 + y[nid] * dy

        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'font-family="Helvetica,Arial,sans-serif" font-size="11">']
        for n in nodes:
            (x0, y0), (x1, y1) = pos(n.parent), pos(n.id)
            out.append(f'<path d="M{x0 + w},{y0 + h / 2} C{x0 + w + 10},{y0 + h / 2} {x1 - 10},{y1 + h / 2} '
                       f'{x1},{y1 + h / 2}" fill="none" stroke="{_COLORS[n.status]}" stroke-width="1.5"/>')
        x, yy = pos(None)
        prompt = _text(tokenizer, self.prompt, prompt=True)
        out.append(f'<g><title>{html.escape(prompt)}</title><rect x="{x}" y="{yy}" width="{w}" height="{h}" rx="5" '
                   f'fill="#f6f8fa" stroke="#57606a"/><text x="{x + 5}" y="{yy + 17}">{html.escape(_clip(prompt))}</text></g>')
        for n in nodes:
            x, yy = pos(n.id)
            fill = _COLORS[n.status]
            ink = "white" if n.status in ("winner", "returned") else "black"
            stroke = f' stroke="{_FINISHED_BORDER}" stroke-width="2.5"' if n.finished else ' stroke="#57606a"'
            tip = f"token {n.token} step {n.step}\nscore {n.score:.4f}\nstatus {n.status}"
            if n.final_score is not None:
                tip += f"\nfinished ({n.end}) final score {n.final_score:.4f}"
            if n.rank is not None:
                tip += f"\nreturned #{n.rank}"
            text = f"{_clip(_text(tokenizer, [n.token]))} {n.score:.2f}"
            out.append(f'<g><title>{html.escape(tip)}</title><rect x="{x}" y="{yy}" width="{w}" height="{h}" rx="5" '
                       f'fill="{fill}"{stroke}/><text x="{x + 5}" y="{yy + 17}" fill="{ink}">{html.escape(text)}</text></g>')
        out.append(_svg_legend(tree_height))
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def to_html(self, tokenizer: Any = None, include_pruned: bool = True, title: str = "Beam search tree") -> str:
        """A self-contained page: the winner's text and the SVG drawing (with its legend)."""
        win = self.winner()
        best = ""
        if win is not None:
            tokens = [n.token for n in self.path(win.id)]
            best = (f"<p><b>Winner</b> (score {win.final_score if win.final_score is not None else win.score:.4f}): "
                    f"<code>{html.escape(_text(tokenizer, tokens))}</code></p>")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
                f"<body style=\"font-family:Helvetica,Arial,sans-serif\"><h3>{html.escape(title)}</h3>{best}\n"
                f"{self.to_svg(tokenizer, include_pruned)}</body></html>\n")

    def save(self, path: Union[str, Path], tokenizer: Any = None) -> Path:
        """Writes ``.json``, ``.dot``, ``.svg`` or ``.html`` (by the file suffix)."""
        return _save(self, path, tokenizer)


class BeamForest(list):
    """One :class:`BeamTree` per batch item (a list), saved together."""

    def to_dict(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self]

    def to_dot(self, tokenizer: Any = None, include_pruned: bool = True) -> str:
        return "".join(t.to_dot(tokenizer, include_pruned) for t in self)

    def to_html(self, tokenizer: Any = None, include_pruned: bool = True) -> str:
        if len(self) == 1:
            return self[0].to_html(tokenizer, include_pruned)
        parts = [t.to_html(tokenizer, include_pruned, title=f"Beam search tree, batch item {i}") for i, t in enumerate(self)]
        bodies = [p.split("<body", 1)[1].split(">", 1)[1].rsplit("</body>", 1)[0] for p in parts]
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Beam search trees</title></head>"
                "<body style=\"font-family:Helvetica,Arial,sans-serif\">" + "<hr>".join(bodies) + "</body></html>\n")

    def save(self, path: Union[str, Path], tokenizer: Any = None) -> Path:
        return _save(self, path, tokenizer)

    def __iter__(self) -> Iterator[BeamTree]:  # for typing
        return super().__iter__()


def _save(obj: Union[BeamTree, BeamForest], path: Union[str, Path], tokenizer: Any) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(obj.to_dict(), indent=1)
    elif suffix in (".dot", ".gv"):
        text = obj.to_dot(tokenizer)
    elif suffix == ".svg":
        trees = obj if isinstance(obj, BeamForest) else [obj]
        if len(trees) != 1:
            raise ValueError("beam_tree: an .svg file holds one tree; save a batch as .html, .json or .dot")
        text = trees[0].to_svg(tokenizer)
    elif suffix in (".html", ".htm"):
        text = obj.to_html(tokenizer)
    else:
        raise ValueError(f"beam_tree: unknown file type {suffix!r}; use .json, .dot, .svg or .html")
    path.write_text(text, encoding="utf-8")
    return path


def _svg_legend(top: float) -> str:
    """The key under the tree: each fill colour, the finished border and what a node's number is."""
    items = [(_COLORS[s], "#57606a", "1", meaning) for s, meaning in _MEANINGS.items()]
    items.append(("#ffffff", _FINISHED_BORDER, "2.5", "red border: a finished hypothesis (EOS, length or stop)"))
    out = ['<g id="legend">']
    x, y = 10, top + 8
    for fill, border, width, label in items:
        out.append(f'<rect x="{x}" y="{y}" width="14" height="14" rx="3" fill="{fill}" stroke="{border}" '
                   f'stroke-width="{width}"/><text x="{x + 19}" y="{y + 11}">{html.escape(label)}</text>')
        x += 19 + 6 * len(label) + 14
        if x > _LEGEND_WIDTH - 200:
            x, y = 10, y + 20
    out.append(f'<text x="10" y="{top + 54}">Node: its token and the cumulative log-probability of its hypothesis '
               "(sum of processed log-probs); hover for step, status, final score.</text>")
    out.append("</g>")
    return "".join(out)


def _text(tokenizer: Any, ids: Sequence[int], prompt: bool = False) -> str:
    if tokenizer is None:
        return " ".join(map(str, ids)) if prompt else str(ids[0] if len(ids) == 1 else list(ids))
    return tokenizer.decode(list(ids))


def _clip(text: str, n: int = 12) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 1] + "…"


def _dot_label(lines: Sequence[str]) -> str:
    """Lines of a Graphviz label: each escaped, joined by Graphviz's newline escape."""
    return "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for line in lines)
