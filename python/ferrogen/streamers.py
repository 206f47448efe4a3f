"""Streamers receive tokens as they are generated.

Any object with ``put(token_ids)`` and ``end()`` works (transformers' streamers too).
``put`` first receives the prompt (``[1, len]``), then each new token (``[1]``).
When generation raises, :func:`ferrogen.generate` ends the stream before the exception
propagates, so a consumer on another thread never waits for text that will not come: it
calls ``on_error(exc)`` when the streamer has one (ferrogen's :class:`TextIteratorStreamer`
then raises ``exc`` in the consumer), else ``end()`` (transformers' streamers: the
consumer's loop stops).

    streamer = TextStreamer(tokenizer, skip_prompt=True)
    ferrogen.generate(model, input_ids=ids, streamer=streamer)   # prints as it goes
"""

from __future__ import annotations

import functools
import sys
from queue import Empty, Queue
from typing import Any, Callable, Iterator, Optional, Protocol, TextIO, TypeVar, Union, cast

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


class _Failure:
    """Queued in place of text: generation raised ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class TextIteratorStreamer(TextStreamer):
    """Queues settled text for another thread to iterate over.

    >>> # streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=10)
    >>> # Thread(target=ferrogen.generate, kwargs=dict(model=m, input_ids=ids, streamer=streamer)).start()
    >>> # text = "".join(streamer)
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None, **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.timeout = timeout
        self._queue: "Queue[Union[str, _Failure, None]]" = Queue()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._queue.put(text)
        if stream_end:
            self._queue.put(None)

    def on_error(self, error: BaseException) -> None:
        """Generation raised ``error``: the consumer gets it instead of waiting for more text."""
        self._reset()
        self._seen_prompt = False
        self._queue.put(_Failure(error))

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            item = self._queue.get(timeout=self.timeout)
        except Empty:
            raise TimeoutError(f"timeout: no text arrived within {self.timeout} s") from None
        if item is None:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item


class _GuardedStream:
    """Forwards ``put``/``end`` to a user's streamer and remembers whether the stream ended,
    so that a failed generation ends it exactly once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.inner.put(value)

    def end(self) -> None:
        self.ended = True
        self.inner.end()

    def fail(self, error: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        on_error = getattr(self.inner, "on_error", None)
        try:
            if callable(on_error):
                on_error(error)
            else:
                self.inner.end()
        except Exception:  # noqa: BLE001 - the caller must see the generation's error, not this one
            pass


_F = TypeVar("_F", bound=Callable[..., Any])


def ends_stream_on_error(generate: _F) -> _F:
    """Wraps a ``generate`` function taking ``streamer=``: when it raises, the streamer's
    stream is ended (``on_error(exc)`` if it has one, else ``end()``) unless it already
    ended, then the exception propagates unchanged."""

    @functools.wraps(generate)
    def guarded(*args: Any, streamer: Any = None, **kwargs: Any) -> Any:
        if streamer is None:
            return generate(*args, **kwargs)
        stream = _GuardedStream(streamer)
        try:
            return generate(*args, streamer=stream, **kwargs)
        except BaseException as error:
            stream.fail(error)
            raise

    return cast(_F, guarded)
