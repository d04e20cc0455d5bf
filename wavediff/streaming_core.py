"""The scheduler of streaming decoding: stages over a signal that grows, each computing a
sample once the input it reaches has arrived. Pure Python (the arrays are torch tensors
in :mod:`wavediff.inference.stream`, numpy arrays in the exported ONNX decoder, which
carries a copy of this file), so both backends stream by the same rules.

A decode is a chain of **stages**. A stage maps its input signal to an output signal of
the same length and is *local*: an output sample depends only on the input within
``reach`` samples of it (and on the mel frames there). Stage ``k``'s input is stage
``k - 1``'s output; the first stage draws its own input (noise) and needs only the mel.
Each stage keeps how far its output is final (``done``) and the input it may still need
(``reach`` behind ``done``). When frames arrive, every stage in turn computes its output
from ``done`` up to ``reach`` before the end of what its input has so far (``right``
instead of ``reach`` when a shorter lookahead is asked for), from the input segment that
reaches ``reach`` beyond both ends; a segment that touches the start of the signal, or its
end once the stream has ended, is computed up to that edge, exactly as the whole signal's
edges are. Every final sample is therefore computed from the same inputs as in the whole
decode.

Per-frame data (the mel, the magnitudes it implies) is kept from the earliest frame a
stage can still need, so memory is bounded by the reaches and the chunk, not the length.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence


def whole_hops(samples: int, hop: int) -> int:
    """``samples`` rounded up to whole hops (stage reaches are kept frame-aligned)."""
    return -(-int(samples) // hop) * hop


class Segment:
    """What a stage computes on: samples ``[a, b)`` and the per-frame data of their frames
    (``data[name]``: ``(..., frames)`` slices); of its output only ``[lo, hi)`` is kept
    (a stage may compute only what that needs)."""

    def __init__(self, a: int, b: int, data: Dict[str, Any], lo: Optional[int] = None,
                 hi: Optional[int] = None) -> None:
        self.a, self.b, self.data = a, b, data
        self.lo = a if lo is None else lo
        self.hi = b if hi is None else hi

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


# (input segment (rows, L) or None for a stage that draws its own input, first sample,
#  one past the last, the segment's frames) -> output segment (rows, L)
StageFn = Callable[[Optional[Any], int, int, Segment], Any]


class Stage:
    """One local operation of the decode: ``fn`` over a segment, exact where the segment
    reaches ``reach`` samples beyond on both sides (or the signal's edge)."""

    def __init__(self, name: str, reach: int, fn: StageFn, *, source: bool = False,
                 network: bool = False) -> None:
        self.name, self.reach, self.fn = name, int(reach), fn
        self.source = source  # draws its own input (the chain's first noise)
        self.network = network  # runs the network
        self.right = self.reach  # how far it looks ahead (less with a shorter lookahead)
        self.done = 0  # output final up to this sample
        self.buf: Optional[Any] = None  # input samples [buf_start, buf_start + length)
        self.buf_start = 0

    def need_from(self) -> int:
        """The first input sample a later computation can need."""
        return max(0, self.done - self.reach)

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, reach={self.reach}, done={self.done})"


class StagePipeline:
    """Runs ``stages`` over a mel that arrives frame by frame (``hop`` samples a frame).

    ``cat(arrays)`` concatenates arrays along their last axis. ``lookahead`` (samples):
    look ahead less than the exact :attr:`lookahead_exact`, each stage its share in
    proportion to its reach. ``block`` (samples): a stage advances only when it can make
    at least this many new samples (default one hop). ``on_trim(pipeline)`` is called
    after each advance, when the kept data has been cut (for caches of the caller's).
    """

    def __init__(self, stages: Sequence[Stage], hop: int, cat: Callable[[List[Any]], Any], *,
                 lookahead: Optional[int] = None, block: Optional[int] = None,
                 on_trim: Optional[Callable[["StagePipeline"], None]] = None) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages, self.hop, self.cat, self.on_trim = list(stages), int(hop), cat, on_trim
        self.block = max(self.hop, int(block or self.hop))
        self.frame_data: Dict[str, Any] = {}  # name -> (..., frames kept)
        self.frame_start = 0  # index of the first frame kept
        self.frames = 0  # frames received
        self.finished = False
        self.lookahead_exact = sum(s.reach for s in self.stages)
        self.lookahead = self.lookahead_exact
        if lookahead is not None:
            self.set_lookahead(int(lookahead))

    def set_lookahead(self, samples: int) -> None:
        """Look ahead ``samples`` (rounded up to whole hops, at most the exact lookahead):
        each stage its share, in proportion to its reach."""
        if samples < 0:
            raise ValueError(f"lookahead must be >= 0 samples, got {samples}")
        samples = min(whole_hops(samples, self.hop), self.lookahead_exact)
        total = max(1, self.lookahead_exact)
        left = samples
        for s in self.stages:
            s.right = min(s.reach, (s.reach * samples // total) // self.hop * self.hop)
            left -= s.right
        for s in self.stages:  # the rounding remainder, to the first stages that can take it
            extra = min(left, s.reach - s.right)
            s.right += extra
            left -= extra
        self.lookahead = sum(s.right for s in self.stages)

    # ------------------------------------------------------------------ streaming
    def add_frames(self, count: int, **data: Any) -> Optional[Any]:
        """``count`` new frames with their per-frame data (each ``(..., count)``); returns
        the last stage's new final output ``(rows, n)``, or None."""
        if self.finished:
            raise ValueError("the stream has ended")
        if count <= 0:
            return None
        for name, value in data.items():
            kept = self.frame_data.get(name)
            self.frame_data[name] = value if kept is None else self.cat([kept, value])
        self.frames += int(count)
        return self.advance()

    def finish(self) -> Optional[Any]:
        """End the stream: the rest of the last stage's output, or None."""
        if self.finished:
            return None
        self.finished = True
        return self.advance()

    def segment(self, a: int, b: int, lo: Optional[int] = None,
                hi: Optional[int] = None) -> Segment:
        f0, f1 = a // self.hop - self.frame_start, b // self.hop - self.frame_start
        return Segment(a, b, {k: v[..., f0:f1] for k, v in self.frame_data.items()}, lo, hi)

    def advance(self) -> Optional[Any]:
        in_hi = self.frames * self.hop
        out = None
        for k, stage in enumerate(self.stages):
            out = self._run(stage, in_hi)  # the last stage's is the result
            if out is not None and k + 1 < len(self.stages):
                nxt = self.stages[k + 1]
                nxt.buf = out if nxt.buf is None else self.cat([nxt.buf, out])
            in_hi = stage.done
        self._trim()
        return out

    def _run(self, stage: Stage, in_hi: int) -> Optional[Any]:
        final = self.finished
        target = in_hi if final else max(0, in_hi - stage.right)
        if target <= stage.done or (not final and target - stage.done < self.block):
            return None
        a = stage.need_from()
        b = in_hi if final else min(in_hi, target + stage.reach)
        x = None if stage.source else stage.buf[..., a - stage.buf_start:b - stage.buf_start]
        y = stage.fn(x, a, b, self.segment(a, b, stage.done, target))
        new = y[..., stage.done - a:target - a]
        stage.done = target
        return new

    def _trim(self) -> None:
        keep_from = self.frames * self.hop
        for s in self.stages:
            start = s.need_from()
            if s.buf is not None and start > s.buf_start:
                s.buf = s.buf[..., start - s.buf_start:]
                s.buf_start = start
            keep_from = min(keep_from, start)
        drop = keep_from // self.hop - self.frame_start
        if drop > 0:
            self.frame_data = {k: v[..., drop:] for k, v in self.frame_data.items()}
            self.frame_start += drop
        if self.on_trim is not None:
            self.on_trim(self)

    def network_need_from(self) -> Optional[int]:
        """The first sample any network stage can still need (None without one)."""
        return min((s.need_from() for s in self.stages if s.network), default=None)
