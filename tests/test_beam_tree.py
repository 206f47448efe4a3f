"""The beam tree: every kept hypothesis with its parent, token, step and scores, consistent
with the returned sequences and scores, exportable as dict, Graphviz, SVG/HTML and networkx."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch

import ferrogen
from ferrogen.beam_tree import BeamForest, BeamTree
from conftest import left_padded_batch
from golden_models import load_stored

BEAMS, NRS, NEW = 4, 2, 7


@pytest.fixture(scope="module")
def gpt2():
    return load_stored("gpt2")


@pytest.fixture(scope="module")
def result(gpt2):
    ids, mask = left_padded_batch((5, 3, 7))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, num_beams=BEAMS, num_return_sequences=NRS,
                            max_new_tokens=NEW, pad_token_id=0, eos_token_id=76, return_dict_in_generate=True,
                            output_scores=True, output_beam_tree=True)
    return ids, out


def test_one_tree_per_item_and_returned_paths_match(result):
    ids, out = result
    forest = out.beam_tree
    assert isinstance(forest, BeamForest) and len(forest) == 3
    start = ids.shape[1]
    for b, tree in enumerate(forest):
        assert tree.prompt == ids[b].tolist()
        ends = sorted((n for n in tree.nodes if n.rank is not None), key=lambda n: n.rank)
        assert [n.rank for n in ends] == list(range(NRS))
        for end in ends:
            row = b * NRS + end.rank
            tokens = [n.token for n in tree.path(end.id)]
            assert out.sequences[row, start : start + len(tokens)].tolist() == tokens
            assert end.finished and end.final_score == pytest.approx(float(out.sequences_scores[row]), abs=1e-6)
            assert [n.beam + b * BEAMS for n in tree.path(end.id)] == out.beam_indices[row, : len(tokens)].tolist()
        assert {n.status for n in tree.path(tree.winner().id)} == {"winner"}


def test_scores_accumulate_along_edges(result):
    _, out = result
    for b, tree in enumerate(out.beam_tree):
        for n in tree.nodes:
            before = 0.0 if n.parent is None else tree.nodes[n.parent].score
            step = float(out.scores[n.step][b * BEAMS + n.beam, n.token])
            assert n.score == pytest.approx(before + step, abs=1e-4)
            assert n.parent is None or tree.nodes[n.parent].step == n.step - 1


def test_statuses_are_consistent(result):
    _, out = result
    for tree in out.beam_tree:
        kids = tree.children()
        for n in tree.nodes:
            below = kids.get(n.id, [])
            if n.status == "pruned":
                assert all(tree.nodes[k].status == "pruned" for k in below)
            else:
                assert n.parent is None or tree.nodes[n.parent].status != "pruned"
            assert (n.final_score is not None) == n.finished
        per_step = {}
        for n in tree.nodes:
            per_step[n.step] = per_step.get(n.step, 0) + 1
        assert max(per_step.values()) <= 2 * BEAMS  # running beams plus finished entries
        assert any(n.status == "pruned" for n in tree.nodes)
    assert any(n.end == "eos" for tree in out.beam_tree for n in tree.nodes)


def test_exports(result, tmp_path):
    _, out = result
    tree = out.beam_tree[0]
    data = json.loads(json.dumps(tree.to_dict()))
    assert data["prompt"] == tree.prompt and len(data["nodes"]) == len(tree.nodes)
    assert {"id", "parent", "token", "step", "score", "status", "finished", "final_score"} <= set(data["nodes"][0])
    dot = tree.to_dot()
    assert dot.startswith("digraph") and dot.count(" -> ") == len(tree.nodes)
    assert tree.to_dot(include_pruned=False).count(" -> ") == sum(n.status != "pruned" for n in tree.nodes)
    svg = ET.fromstring(tree.to_svg())
    groups = svg.findall("{http://www.w3.org/2000/svg}g")
    assert len([g for g in groups if g.get("id") != "legend"]) == len(tree.nodes) + 1
    assert "<svg" in tree.to_html() and "Winner" in tree.to_html()
    for suffix in ("json", "dot", "svg", "html"):
        assert tree.save(tmp_path / f"t.{suffix}").stat().st_size > 0
    assert out.beam_tree.save(tmp_path / "all.html").read_text().count("<svg") == 3
    with pytest.raises(ValueError, match="beam_tree"):
        tree.save(tmp_path / "t.png")
    nx = pytest.importorskip("networkx")
    graph = tree.to_networkx()
    assert graph.number_of_nodes() == len(tree.nodes) + 1 and nx.is_arborescence(graph)


def test_svg_has_a_legend_for_every_colour_the_border_and_the_scores(result):
    """The drawing explains itself: each status colour, the red border of a finished
    hypothesis and that a node's number is a cumulative log-probability."""
    from ferrogen.beam_tree import _COLORS, _FINISHED_BORDER

    _, out = result
    svg = ET.fromstring(out.beam_tree[0].to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    legend = [g for g in svg.findall(f"{ns}g") if g.get("id") == "legend"]
    assert len(legend) == 1
    swatches = legend[0].findall(f"{ns}rect")
    labels = [t.text for t in legend[0].findall(f"{ns}text")]
    assert {r.get("fill") for r in swatches} >= set(_COLORS.values())
    assert any(r.get("stroke") == _FINISHED_BORDER for r in swatches)
    text = " ".join(labels)
    for words in ("best returned sequence", "another returned", "not returned", "pruned", "finished hypothesis",
                  "cumulative log-probability"):
        assert words in text
    # the legend lies below the tree, inside the drawing
    tree_bottom = max(float(r.get("y")) + float(r.get("height")) for g in svg.findall(f"{ns}g")
                      if g.get("id") != "legend" for r in g.findall(f"{ns}rect"))
    assert tree_bottom <= min(float(r.get("y")) for r in swatches) <= float(svg.get("height"))


def test_group_beam_tree_marks_groups(gpt2):
    ids, mask = left_padded_batch((4,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, num_beams=4, num_beam_groups=2,
                            diversity_penalty=1.0, max_new_tokens=5, pad_token_id=0, return_dict_in_generate=True,
                            output_scores=True, output_beam_tree=True)
    tree = out.beam_tree[0]
    assert {n.group for n in tree.nodes} == {0, 1}
    win = tree.winner()
    assert win.final_score == pytest.approx(float(out.sequences_scores[0]), abs=1e-6)
    assert [n.token for n in tree.path(win.id)] == out.sequences[0, ids.shape[1] :].tolist()[: len(tree.path(win.id))]


def test_tree_implies_return_dict(gpt2):
    ids, mask = left_padded_batch((4,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, num_beams=2, max_new_tokens=3, pad_token_id=0,
                            output_beam_tree=True)
    assert isinstance(out, ferrogen.GenerateOutput) and out.beam_tree is not None
    assert len(out.beam_tree) == 1 and out.beam_tree[0].winner().final_score is not None


def test_cli_writes_the_tree(gpt2, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ferrogen import cli

    vocab = {f"w{i}": i for i in range(96)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="w0", eos_token="w2", unk_token="w3")
    model_dir = tmp_path / "model"
    gpt2.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out_file, tree_file = tmp_path / "out.jsonl", tmp_path / "tree.html"
    code = cli.main(["generate", "--model", str(model_dir), "--prompt", "w5 w6 w7", "--num-beams", "3",
                     "--max-new-tokens", "4", "--beam-tree", str(tree_file), "--output", str(out_file)])
    assert code == 0 and "<svg" in tree_file.read_text()
    assert json.loads(out_file.read_text())["token_ids"]
    assert cli.main(["generate", "--model", str(model_dir), "--prompt", "w5", "--max-new-tokens", "2",
                     "--beam-tree", str(tree_file)]) == 2  # greedy has no beam tree


def test_from_core_splits_by_item():
    cols = {"parent": [-1, -1, 0], "token": [5, 6, 7], "parent_row": [0, 2, 1], "batch": [0, 1, 0],
            "group": [0, 0, 0], "step": [0, 0, 1], "score": [-1.0, -2.0, -3.0], "final_score": [float("nan")] * 2 + [-1.5],
            "end": ["running", "running", "eos"], "kept": [True, False, True]}
    cols = {k: (v if k == "end" else __import__("numpy").asarray(v)) for k, v in cols.items()}
    forest = BeamTree.from_core(cols, torch.tensor([[1], [2]]), __import__("numpy").asarray([2, -1]), 1, 2)
    assert [len(t.nodes) for t in forest] == [2, 1]
    assert forest[0].nodes[1].parent == 0 and forest[0].nodes[1].status == "winner" and forest[1].nodes[0].status == "pruned"
    assert forest[0].nodes[1].beam == 1


def _deepest_and_finishing_step(tree, group=0):
    """A tree's (or a group's) deepest node and the step its last finished hypothesis ended at:
    with ``early_stopping=True`` an item (a group) is done once its ``num_beams`` slots are full."""
    nodes = [n for n in tree.nodes if n.group == group]
    return max(n.step for n in nodes), max(n.step for n in nodes if n.finished)


@pytest.mark.parametrize("groups, seed, eos", [(1, 3, 34), (2, 3, 3)])
def test_a_done_item_records_no_more_nodes(gpt2, groups, seed, eos):
    # Item 0 (with groups: item 0's group 0) is done at step 7 (3) of 11; its rows run on in
    # transformers' search (a group's on padding) but are no hypotheses any more: no nodes.
    ids, mask = left_padded_batch((4, 4), seed=seed)
    extra = {"num_beam_groups": 2, "diversity_penalty": 1.0} if groups > 1 else {}
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, num_beams=2 + groups, max_new_tokens=12,
                            pad_token_id=0, eos_token_id=eos, early_stopping=True, return_dict_in_generate=True,
                            output_beam_tree=True, **extra)
    deepest, finishing = _deepest_and_finishing_step(out.beam_tree[0])
    assert finishing < max(n.step for tree in out.beam_tree for n in tree.nodes), "the batch runs on"
    assert deepest == finishing
