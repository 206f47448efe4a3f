"""Streamers see exactly the tokens generate returns, in order."""

from __future__ import annotations

import io
import threading

import pytest
import torch

import ferrogen
from conftest import left_padded_batch


@pytest.fixture(scope="module")
def embedded():
    return ferrogen.text.load_model(ferrogen.embedded_model_path())


class Recorder:
    def __init__(self):
        self.puts: list[torch.Tensor] = []
        self.ended = 0

    def put(self, value):
        self.puts.append(torch.as_tensor(value).clone())

    def end(self):
        self.ended += 1


def test_any_put_end_object_receives_prompt_then_tokens(gpt2):
    ids, mask = left_padded_batch((4, 2))
    rec = Recorder()
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=5, pad_token_id=0, streamer=rec)
    assert torch.equal(rec.puts[0], ids)
    assert torch.equal(torch.stack(rec.puts[1:], dim=1), out[:, ids.shape[1] :])
    assert rec.ended == 1


def test_text_streamer_prints_the_decoded_output(embedded):
    model, tok = embedded
    ids = tok("And God said", return_tensors="pt")
    buf = io.StringIO()
    streamer = ferrogen.TextStreamer(tok, skip_prompt=True, file=buf)
    out = ferrogen.generate(model, **ids, max_new_tokens=25, streamer=streamer)
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert buf.getvalue() == expected + "\n"


def test_text_streamer_with_prompt_and_transformers_streamer_agree(embedded):
    from transformers import TextStreamer as HFTextStreamer

    model, tok = embedded
    ids = tok("In the beginning", return_tensors="pt")
    ours = io.StringIO()
    ferrogen.generate(model, **ids, max_new_tokens=15, streamer=ferrogen.TextStreamer(tok, file=ours))

    class Captured(HFTextStreamer):
        text = ""

        def on_finalized_text(self, text, stream_end=False):
            Captured.text += text + ("\n" if stream_end else "")

    ferrogen.generate(model, **ids, max_new_tokens=15, streamer=Captured(tok))
    assert ours.getvalue() == Captured.text


def test_iterator_streamer_from_a_thread(embedded):
    model, tok = embedded
    ids = tok("The LORD is my shepherd", return_tensors="pt")
    streamer = ferrogen.TextIteratorStreamer(tok, skip_prompt=True, timeout=60)
    result = {}

    def run():
        result["out"] = ferrogen.generate(model, **ids, max_new_tokens=20, streamer=streamer)

    thread = threading.Thread(target=run)
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text == tok.decode(result["out"][0, ids["input_ids"].shape[1] :])


def test_iterator_streamer_times_out():
    streamer = ferrogen.TextIteratorStreamer(tokenizer=None, timeout=0.01)
    with pytest.raises(TimeoutError, match="timeout"):
        next(iter(streamer))


def test_text_streamer_refuses_batches(embedded):
    _, tok = embedded
    with pytest.raises(ValueError, match="streamer"):
        ferrogen.TextStreamer(tok).put(torch.zeros((2, 3), dtype=torch.long))


def test_group_beam_search_streams_the_prefix_its_groups_agree_on(embedded):
    """Diverse groups grow their own nodes for the same tokens; what every live beam of every
    group (and the best finished one) starts with is released as it settles, not at the end."""
    model, tok = embedded
    calls = [0]
    hook = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seen: list[int] = []

    class AtForward(Recorder):
        def put(self, value):
            super().put(value)
            seen.append(calls[0])

    rec = AtForward()
    try:
        out = ferrogen.generate(model, **tok("And God said", return_tensors="pt"), num_beams=4, num_beam_groups=2,
                                diversity_penalty=0.5, max_new_tokens=12, streamer=rec, return_dict_in_generate=True)
    finally:
        hook.remove()
    start = rec.puts[0].shape[1]
    generated = int((out.beam_indices[0] >= 0).sum())
    assert [int(v) for v in rec.puts[1:]] == out.sequences[0, start : start + generated].tolist()
    assert rec.ended == 1
    assert seen[1] < calls[0], "the first settled token waited for the end of the search"


class Boom(RuntimeError):
    pass


def failing_after(steps: int):
    """A logits processor that raises on its ``steps + 1``-th call."""
    calls = []

    def processor(input_ids, scores):
        calls.append(1)
        if len(calls) > steps:
            raise Boom(f"failed at step {len(calls)}")
        return scores

    return processor


def consume_while_generating(model, ids, streamer, **kwargs):
    """Runs generate on a thread and iterates ``streamer`` here: (pieces, consumer's exception,
    producer's exception). The streamer's timeout bounds the wait when the stream never ends."""
    produced: dict = {}

    def run():
        try:
            ferrogen.generate(model, **ids, max_new_tokens=12, streamer=streamer, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            produced["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    pieces, consumed = [], None
    try:
        for piece in streamer:
            pieces.append(piece)
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        consumed = exc
    thread.join(60)
    return pieces, consumed, produced.get("error")


@pytest.mark.parametrize("mode", [dict(), dict(num_beams=2)], ids=["greedy", "beam"])
@pytest.mark.parametrize("steps", [0, 4])
def test_iterator_streamer_consumer_gets_the_producers_exception(embedded, mode, steps):
    model, tok = embedded
    ids = tok("And God said", return_tensors="pt")
    streamer = ferrogen.TextIteratorStreamer(tok, skip_prompt=True, timeout=20)
    _, consumed, produced = consume_while_generating(model, ids, streamer, logits_processor=[failing_after(steps)],
                                                     **mode)
    assert isinstance(produced, Boom)
    assert consumed is produced, f"the consumer got {consumed!r} instead of the producer's exception"
    # the streamer is usable again after the failure
    again, consumed, produced = consume_while_generating(model, ids, streamer, **mode)
    assert consumed is None and produced is None and "".join(again)


def test_iterator_streamer_gets_argument_errors_raised_before_any_token(embedded):
    model, tok = embedded
    streamer = ferrogen.TextIteratorStreamer(tok, timeout=20)
    _, consumed, produced = consume_while_generating(model, tok("Jesus wept", return_tensors="pt"), streamer,
                                                     do_sample=True, temperature=-1.0)
    assert isinstance(produced, ValueError) and "temperature" in str(produced)
    assert consumed is produced


def test_transformers_iterator_streamer_ends_when_generation_raises(embedded):
    from transformers import TextIteratorStreamer as HFTextIteratorStreamer

    model, tok = embedded
    ids = tok("And God said", return_tensors="pt")
    streamer = HFTextIteratorStreamer(tok, skip_prompt=True, timeout=20)
    pieces, consumed, produced = consume_while_generating(model, ids, streamer, logits_processor=[failing_after(4)])
    assert isinstance(produced, Boom)
    assert consumed is None, f"the consumer's loop did not end: {consumed!r}"


def test_a_stream_that_ended_is_not_ended_again(embedded):
    model, tok = embedded
    rec = Recorder()

    def end_then_fail():
        Recorder.end(rec)
        raise Boom("after end")

    rec.end = end_then_fail  # the strategy's end() raises after the stream ended
    with pytest.raises(Boom):
        ferrogen.generate(model, **tok("Jesus wept", return_tensors="pt"), max_new_tokens=3, streamer=rec)
    assert rec.ended == 1
