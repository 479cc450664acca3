"""A serving loop: chunked prefill, then decode token by token against a growing KV cache.

``serve(workload)`` takes a workload with a ``serve:`` section and one decoder ``model``
(docs/serving.md). Every step is simulated as its own workload on the same hardware:

* **prefill chunk** ``i``: the chunk's ``c`` tokens through every linear layer (``batch·c``
  rows) and through attention with ``q_len = c`` against the ``kv_len`` tokens cached so far
  (chunked prefill, causal);
* **decode step** ``j``: one token per sequence through the linear layers and attention against
  ``prompt + j + 1`` cached tokens (its own included).

The prefill yields the first output token, so the time to first token (TTFT) is the prefill's
cycles; each further token costs one decode step, and the time per output token (TPOT) is their
mean. A phase is *bound* by the unit with the most busy cycles over its steps (``dma`` = the
DRAM port). Steps whose linear layers have equal shapes share one simulation, and attention
layers that differ only in name run as one op with ``repeat``; the attention of every step is
simulated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from archsim.api import simulate
from archsim.size import check_size
from archsim.stats import SimResult
from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.spec import AttentionOp, DenseAttention, LinearOp, ModelOp, WorkloadSpec
from workloads.zoo import model_layers

__all__ = ["ServeStep", "ServeResult", "serve"]


@dataclass(frozen=True, slots=True)
class ServeStep:
    """One prefill chunk or decode step (all layers, all sequences of the batch)."""

    phase: str
    q_len: int
    kv_len: int
    cycles: int
    linear_cycles: int
    attention_cycles: int
    kv_bytes: int
    kv_blocks: int
    unit_busy_cycles: dict[str, int]


@dataclass(frozen=True)
class ServeResult:
    """TTFT, TPOT, the bounding unit of each phase and every step.

    ``kv_blocks`` of a step: key blocks its attention loads (over all layers, heads and work
    items); ``kv_bytes``: the K and V bytes they read.
    """

    model: str
    batch: int
    prompt_tokens: int
    chunk_tokens: int
    output_tokens: int
    clock_mhz: float
    steps: tuple[ServeStep, ...] = field(repr=False)

    def _phase(self, name: str) -> list[ServeStep]:
        return [s for s in self.steps if s.phase == name]

    @property
    def ttft_cycles(self) -> int:
        return sum(s.cycles for s in self._phase("prefill"))

    @property
    def tpot_cycles(self) -> float:
        decode = self._phase("decode")
        return sum(s.cycles for s in decode) / len(decode) if decode else 0.0

    def bound(self, phase: str) -> str:
        """The unit with the most busy cycles over the phase's steps."""
        busy: dict[str, int] = {}
        for s in self._phase(phase):
            for unit, cycles in s.unit_busy_cycles.items():
                busy[unit] = busy.get(unit, 0) + cycles
        return max(busy, key=busy.get) if busy else "none"

    def as_dict(self) -> dict:
        us = 1.0 / self.clock_mhz
        return {
            "model": self.model, "batch": self.batch, "prompt_tokens": self.prompt_tokens,
            "chunk_tokens": self.chunk_tokens, "output_tokens": self.output_tokens,
            "clock_mhz": self.clock_mhz, "ttft_cycles": self.ttft_cycles, "ttft_ms": self.ttft_cycles * us / 1e3,
            "tpot_cycles": self.tpot_cycles, "tpot_ms": self.tpot_cycles * us / 1e3,
            "prefill_bound": self.bound("prefill"), "decode_bound": self.bound("decode"),
            "steps": [{f: getattr(s, f) for f in ServeStep.__slots__} for s in self.steps],
        }


def _ops(model: ModelOp, phase: str, q_len: int, kv_len: int) -> tuple[tuple, tuple]:
    """(linear ops, attention ops) of one step, equal layers merged into one op with repeat."""
    step = model.model_copy(update={"seq_len": kv_len if phase == "decode" else q_len,
                                    "phase": phase})
    linear: dict[tuple, int] = {}
    attention: dict[AttentionOp, int] = {}
    for layer in model_layers(step):
        if layer.kind == "attention":
            op = layer.attention.model_copy(update={"name": "attn", "q_len": q_len,
                                                    "kv_len": kv_len})
            attention[op] = attention.get(op, 0) + 1
        else:
            shape = (layer.rows, layer.in_features, layer.out_features)
            linear[shape] = linear.get(shape, 0) + 1
    lin = tuple(LinearOp(op="linear", name=f"linear{i}", batch=rows, in_features=k,
                         out_features=n, repeat=count)
                for i, ((rows, k, n), count) in enumerate(sorted(linear.items())))
    att = tuple(op.model_copy(update={"name": f"attn{i}", "repeat": count})
                for i, (op, count) in enumerate(attention.items()))
    return lin, att


def _run(workload: WorkloadSpec, ops: tuple, where: str) -> SimResult:
    spec = workload.model_copy(update={"operations": ops, "serve": None})
    check_size(spec, where)  # before building anything (limits.tile_steps), as archsim run does
    return simulate(spec)


def _step(workload: WorkloadSpec, model: ModelOp, phase: str, q_len: int, kv_len: int,
          linear_cache: dict) -> ServeStep:
    where = f"{workload.name}: the {phase} step of {q_len:,} tokens at KV length {kv_len:,}"
    try:
        lin, att = _ops(model, phase, q_len, kv_len)
    except ValidationError as exc:  # a step's op out of its fields' range (batch · tokens)
        error = exc.errors()[0]
        field_name = ".".join(str(p) for p in error["loc"])
        raise SpecError(f"{where}: {exc.title} {field_name}: {error['msg']}, got "
                        f"{error['input']!r}; use fewer tokens or a smaller batch") from None
    if lin not in linear_cache:
        linear_cache[lin] = _run(workload, lin, where)
    lr, ar = linear_cache[lin], _run(workload, att, where)
    busy = {u: lr.unit_busy_cycles[u] + ar.unit_busy_cycles[u] for u in lr.unit_busy_cycles}
    return ServeStep(phase, q_len, kv_len, lr.total_cycles + ar.total_cycles, lr.total_cycles,
                     ar.total_cycles, sum(r.kv_bytes for r in ar.attention),
                     sum(r.blocks_executed for r in ar.attention), busy)


def serve(workload: WorkloadSpec) -> ServeResult:
    """Simulate the workload's serving run (its ``serve:`` section); see the module docstring."""
    if workload.serve is None:
        raise ValueError("the workload has no serve: section")
    model, spec = workload.operations[0], workload.serve
    if model.pattern is None:  # attention as attention layers, reading the KV cache
        model = model.model_copy(update={"pattern": DenseAttention()})
    prompt = spec.prompt_tokens
    chunk = min(spec.chunk_tokens or prompt, prompt)
    _check_step_count(workload, ceil_div(prompt, chunk) + spec.output_tokens - 1)
    cache: dict = {}
    steps = []
    for i in range(ceil_div(prompt, chunk)):
        q = min(chunk, prompt - i * chunk)
        steps.append(_step(workload, model, "prefill", q, i * chunk + q, cache))
    for j in range(spec.output_tokens - 1):  # the prefill produced the first token
        steps.append(_step(workload, model, "decode", 1, prompt + j + 1, cache))
    return ServeResult(model.model, model.batch, prompt, chunk, spec.output_tokens,
                       workload.hardware.clock_mhz, tuple(steps))


def _check_step_count(workload: WorkloadSpec, steps: int) -> None:
    """Refuse a run of more serving steps than tile steps allowed: each step simulates at least
    one tile step per layer, so it could not finish within ``limits.tile_steps`` anyway."""
    limit, spec = workload.limits.tile_steps, workload.serve
    if steps > limit:
        # The field that makes most of the steps (the CLI points at its line or --set).
        chunks = steps - spec.output_tokens + 1
        field = ("output_tokens" if spec.output_tokens - 1 >= chunks else
                 "chunk_tokens" if spec.chunk_tokens else "prompt_tokens")
        raise SpecError(
            f"serve.{field}: {workload.name} takes {steps:,} serving steps (prompt chunks, then "
            f"one per output token after the first), above limits.tile_steps = {limit:,}; use "
            f"fewer tokens or larger serve.chunk_tokens, or raise 'limits: {{tile_steps: ...}}'")
