"""The SpGEMM writer: one dataflow's chunk tables as a tile program (docs/isa.md, "SpGEMM
instructions"), run by the same SimPy model and fast engine as every GEMM program.

A phase (:class:`~dataflows.spgemm.ChunkTable`) runs its chunks through the SpGEMM engine's
two scratchpad slots. Chunk ``c`` is three instructions:

* ``SP_LOAD`` (DMA) fetches its operands into slot ``c mod 2``, once the engine has finished
  with the chunk that slot held (chunk ``c − 2``);
* an engine op (``SP_INTERSECT``, ``SP_MULTIPLY``, ``SP_MERGE`` or ``SP_HASH``, on the PE
  unit's queue: the engine takes the array's place) works the chunk's cycles once its load is
  done and the previous chunk is finished;
* ``SP_STORE`` (DMA) writes its output back once the engine has finished it (and reads back
  what the hash engine spilled).

The DMA executes them in the order ``load 0, load 1, store 0, load 2, store 1, load 3, …``: a
write-back goes out before the load that refills its chunk's slot. The engine never waits for a
write-back (its output leaves through the store queue). A transfer of nothing is not issued
(no instruction), like a chunk's store of an empty output. Phases follow one another on the
same units (the outer product's merge phase loads after the multiply phase's last store).

The waits come from the program layer's :class:`~dataflows.program.Emitter`, from the slots
each instruction reads and writes, as for every other program.
"""

from __future__ import annotations

import numpy as np

from dataflows.isa import SLOTS_PER_BUFFER, Op, SpGEMMInstr
from dataflows.program import Buffer, Emitter, Program, Resource
from dataflows.spgemm import ChunkTable

__all__ = ["ENGINE_OP", "spgemm_program"]

#: The engine op that works each phase's chunks, by phase name (``ChunkTable.name``).
ENGINE_OP = {
    "inner": Op.SP_INTERSECT,
    "outer.multiply": Op.SP_MULTIPLY,
    "outer.merge": Op.SP_MERGE,
    "gustavson": Op.SP_MERGE,
    "hash": Op.SP_HASH,
}


def spgemm_program(tables: list[ChunkTable]) -> Program:
    """The tile program that runs ``tables`` (a dataflow's phases) back to back; its tags
    index the phases (``tables[tag].name``)."""
    em = Emitter(instr_type=SpGEMMInstr)
    scratchpad = Buffer(SLOTS_PER_BUFFER)
    for tag, table in enumerate(tables):
        _write_phase(em, tag, table, scratchpad)
    return em.program


def _write_phase(em: Emitter, tag: int, table: ChunkTable, scratchpad: Buffer) -> None:
    n = table.n_chunks
    fetch = [int(x) for x in table.fetch_total()]
    out = [int(x) for x in table.write_total()]
    back = [int(x) for x in (table.readback_bytes if table.readback_bytes is not None
                             else np.zeros(n, dtype=np.int64))]
    cycles = [int(x) for x in table.engine_cycles]
    engine_op = ENGINE_OP[table.name]
    slots = [scratchpad.claim() for _ in range(n)]

    def load(c: int) -> None:
        if fetch[c] > 0:
            em.emit(Op.SP_LOAD, tag, writes=(scratchpad.slots[slots[c]],), slot=slots[c],
                    nbytes=fetch[c])

    for c in range(min(SLOTS_PER_BUFFER, n)):
        load(c)
    for c in range(n):
        output = Resource()  # the chunk's output, on its way out through the store queue
        em.emit(engine_op, tag, reads=(scratchpad.slots[slots[c]],), writes=(output,),
                slot=slots[c], cycles=cycles[c])
        if out[c] + back[c] > 0:
            em.emit(Op.SP_STORE, tag, reads=(output,), slot=slots[c], nbytes=out[c],
                    spill_bytes=back[c])
        if c + SLOTS_PER_BUFFER < n:
            load(c + SLOTS_PER_BUFFER)
