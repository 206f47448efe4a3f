"""Streamers receive tokens as they are generated.

Any object with ``put(token_ids)`` and ``end()`` works (transformers' streamers too).
``put`` first receives the prompt (``[1, len]``), then each new token (``[1]``).

    streamer = TextStreamer(tokenizer, skip_prompt=True)
    ferrogen.generate(model, input_ids=ids, streamer=streamer)   # prints as it goes
"""

from __future__ import annotations

import sys
from queue import Empty, Queue
from typing import Any, Iterator, Optional, Protocol, TextIO

import torch

__all__ = ["Streamer", "TextStreamer", "TextIteratorStreamer"]


class Streamer(Protocol):
    def put(self, value: torch.Tensor) -> None: ...

    def end(self) -> None: ...


class TextStreamer:
    """Prints decoded text as soon as it settles.

    Text settles at a word boundary: it is printed up to the last space or newline,
    so a word split over several tokens is printed whole, and a partial UTF-8
    character (decoded as U+FFFD) is held back until its next byte arrives.
    """

    def __init__(
        self,
        tokenizer: Any,
        skip_prompt: bool = False,
        file: Optional[TextIO] = None,
        **decode_kwargs: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.file = file
        self.decode_kwargs = decode_kwargs
        self._tokens: list[int] = []
        self._printed = 0
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value)
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("streamer: TextStreamer supports batch size 1 only")
            value = value[0]
        if self.skip_prompt and not self._seen_prompt:
            self._seen_prompt = True
            return
        self._seen_prompt = True
        self._tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self._tokens, **self.decode_kwargs)
        if text.endswith("\n"):
            self._emit(text[self._printed :], final=False)
            self._reset()
            return
        if text.endswith("\ufffd"):
            return
        cut = max(text.rfind(" "), text.rfind("\n")) + 1
        if cut > self._printed:
            self._emit(text[self._printed : cut], final=False)
            self._printed = cut

    def end(self) -> None:
        if self._tokens:
            text = self.tokenizer.decode(self._tokens, **self.decode_kwargs)
            self._emit(text[self._printed :], final=True)
        else:
            self._emit("", final=True)
        self._reset()
        self._seen_prompt = False

    def _reset(self) -> None:
        self._tokens = []
        self._printed = 0

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Called with each settled piece of text; prints it. Override to send it elsewhere."""
        out = self.file if self.file is not None else sys.stdout
        print(text, end="" if not stream_end else "\n", file=out, flush=True)

    def _emit(self, text: str, final: bool) -> None:
        self.on_finalized_text(text, stream_end=final)


class TextIteratorStreamer(TextStreamer):
    """Queues settled text for another thread to iterate over.

    >>> # streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=10)
    >>> # Thread(target=ferrogen.generate, kwargs=dict(model=m, input_ids=ids, streamer=streamer)).start()
    >>> # text = "".join(streamer)
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None, **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.timeout = timeout
        self._queue: "Queue[Optional[str]]" = Queue()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._queue.put(text)
        if stream_end:
            self._queue.put(None)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            item = self._queue.get(timeout=self.timeout)
        except Empty:
            raise TimeoutError(f"timeout: no text arrived within {self.timeout} s") from None
        if item is None:
            raise StopIteration
        return item
