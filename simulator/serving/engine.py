"""Request-level serving simulation (simpy): arrivals, continuous batching, KV capacity, disaggregation.

Each model replica (tp x pp devices, layout.dp of them) runs one scheduler per pipeline stage
("virtual engines", as vLLM runs pipeline parallelism; they share the replica's KV cache and take turns
on each stage), each a simpy process that loops over steps:
take the requests that arrived, choose the step's tokens, wait the step's time from
simulator.serving.steps, advance every running sequence at once (numpy over the running batch). One
simpy event per step (per stage with pp > 1), never one per token. A decode-only step (every running
sequence one token, the common step) takes a fast path: its cost from the batch's size and total
context alone (StepCosts.decode_stage_times), the batch's arrays left untouched (simulator.serving.batch
counts the step and keeps running totals) until a sequence finishes or the scheduler reads them. The
step log is numpy columns (simulator.serving.steplog).

Step choice (workload.chunked_prefill):
- false (prefill first, vLLM's default of 2024): admit waiting requests FIFO while slots (`batch`, vLLM's
  max_num_seqs), tokens (`max_num_tokens`; a longer prompt runs alone) and KV cache allow, and run their whole
  prompts in one prefill step; otherwise one decode step of every running sequence.
- true (Sarathi-Serve, vLLM V1, SGLang, TensorRT-LLM's in-flight batching): a token budget of max_num_tokens a step:
  every decode first (1 token each), then the chunks of prompts being prefilled, then new admissions, in one step.
The step that finishes a prompt emits the first token (TTFT); each later step emits one more (TPOT).

KV cache (workload.admission): `reserve` admits a request only with room for prompt + output tokens,
so nothing is ever evicted; `preempt` admits on the prompt and, when a step would overflow the cache,
evicts the newest running request, which returns to the head of the queue and recomputes its prompt
and generated tokens (vLLM's recompute preemption). The cache is paged: a sequence holds whole blocks of
`kv_block` tokens (vLLM's block_size, 16 by default), so its last block is partly empty (fragmentation). A request
that cannot fit an empty replica is
rejected; every other request completes, and the counts are reported.

Disaggregation (workload.disaggregated): the first `prefill_replicas` replicas only prefill; each
prompt's KV cache then travels to a decode replica over the fabric (one transfer at a time per prefill
replica, all TP ranks and stages in parallel), and the decode replica generates the remaining tokens.
Requests go to replicas round-robin in arrival order (and to a replica's virtual engines likewise).
"""

from __future__ import annotations


import numpy as np
import simpy

from ..cost.fabric import Fabric, fabric_for
from .batch import EngineState as _Engine
from .memory import serve_memory
from .requests import make_requests
from .steplog import StepLog
from .steps import StepCosts, replica_devices, step_costs
from .summary import step_summary
from .timeline import DECODE, MIXED, PREFILL, STEP_KINDS, ServeTimeline

__all__ = ["DECODE", "MIXED", "PREFILL", "STEP_KINDS", "ServeTimeline", "Simulation", "simulate_requests"]



class Simulation:
    """Builds the engines of a scenario, runs them in simpy, and returns a ServeTimeline."""

    fast_decode = True  # decode-only steps on the fast path (tests turn it off to compare)

    def __init__(self, scn, costs: StepCosts | None = None, fabric: Fabric | None = None):
        self.scn, w = scn, scn.workload
        self.fabric = fabric or fabric_for(scn.topology)
        self.costs = costs or step_costs(scn, self.fabric)
        self.summary = step_summary(scn, self.costs, self.fabric)
        self.memory = serve_memory(scn)
        self.req = make_requests(scn)
        n = len(self.req)
        self.first, self.finish = np.full(n, np.nan), np.full(n, np.nan)
        self.preempted = np.zeros(n, np.int32)
        self.evicted_gen: dict[int, int] = {}  # request id -> tokens it had emitted when evicted
        self.ranks = scn.layout.ep  # attention replicas of an MoE EP unit, stepping together
        self.batch, self.budget = w.batch * self.ranks, w.max_num_tokens * self.ranks
        self.chunked, self.reserve = w.chunked_prefill, w.admission == "reserve"
        self.pp, dp = scn.layout.pp, scn.layout.dp // self.ranks
        prefill = w.disaggregated.prefill_replicas if w.disaggregated else 0
        self.roles = tuple("serve" if not prefill else ("prefill" if r < prefill else "decode") for r in range(dp))
        self.devices = replica_devices(scn)
        self.log = StepLog(dp, self.pp, self.batch)
        self._memo: dict = {}  # small steps' stage times (_stage_times)
        self.transfers: list[tuple] = []
        self.kv_now = np.zeros((dp, self.pp))
        self.kv_peak = np.zeros(dp)
        self.capacity = self.memory.kv_tokens if self.memory.fits_weights else 0  # a replica's, shared by its engines
        self.reserved = np.zeros(dp, dtype=np.int64)  # KV tokens reserved (reserve policy) or held for transfer
        self.rejected = self._paged(self.req.prompt + self.req.output) > self.capacity
        self.rank = np.zeros(n, np.int32)  # each request's attention replica in its EP unit
        self.engines = self._build_engines()

    def _build_engines(self) -> list[_Engine]:
        """Engines per replica and stage; arrivals routed round-robin over the front (non-decode) engines."""
        ok = np.flatnonzero(~self.rejected)
        front = [r for r, role in enumerate(self.roles) if role != "decode"]
        engines = []
        for r, role in enumerate(self.roles):
            for e in range(self.pp):
                feed = np.zeros(0, int)
                if role != "decode":
                    feed = ok[front.index(r) + len(front) * e::len(front) * self.pp]
                    self.rank[feed] = np.arange(len(feed)) % self.ranks
                engines.append(_Engine(replica=r, index=e, role=role, feed=feed))
        self.decoders = [g for g in engines if g.role == "decode"]
        self.by_replica = [[g for g in engines if g.replica == r] for r in range(len(self.roles))]
        return engines

    # --- run -----------------------------------------------------------------------------------
    def run(self) -> ServeTimeline:
        env = self.env = simpy.Environment()
        self.stages = [[simpy.Resource(env) for _ in range(self.pp)] for _ in self.roles]
        self.links = [simpy.Resource(env) for _ in self.roles]
        self.in_flight = int((~self.rejected).sum())
        self.all_done = env.event()
        for g in self.engines:
            env.process(self._loop(env, g))
        if self.in_flight:
            env.run(until=self.all_done)
        return self._timeline(env.now)

    def _loop(self, env, g: _Engine):
        """One engine: absorb arrivals, pick the step, time it, advance the batch; sleep when idle."""
        arrival = self.req.arrival
        fast = self.fast_decode and self.ranks == 1 and self.costs.moe is None and not self.costs.attn.windowed
        decode = self.costs.decode_stage_times if fast else None
        while True:
            self._absorb(g, env.now)
            new = self._choose(g) if (len(g.ids) or g.waiting) else None
            if new is None:
                nxt = arrival[g.feed[g.pos]] if g.pos < len(g.feed) else None
                if nxt is None and g.role == "serve" and not g.waiting:
                    return
                g.wake = env.event()
                yield g.wake if nxt is None else env.any_of([g.wake, env.timeout(nxt - env.now)])
                g.wake = None
                continue
            n = len(g.ids)
            if decode is not None and n and len(new) == n and g.decoding() and new.sum() == n:
                yield from self._decode_step(env, g, n, decode)
                continue
            sel = new > 0
            emit = sel & (g.todo == new)
            kind = _kind(g.todo[sel])
            start, m = env.now, int(new.sum())
            kv = float(g.ctx.sum()) + m
            self.kv_now[g.replica, g.index] = self._held(g.ctx + new)  # what this step will hold, for the siblings
            ranks = self.rank[g.ids[sel]] if self.ranks > 1 else None
            stage_t, flops = self._stage_times(new[sel], g.ctx[sel], int(emit.sum()), ranks)
            if self.pp == 1:
                yield env.timeout(float(stage_t[0]))
            else:
                yield from self._through_stages(env, g.replica, stage_t,
                                                self.costs.pp_hop(self.costs.busiest(new[sel], ranks)))
            self.log.add((g.replica, g.index, start, env.now, kind, int(sel.sum()), m, int(emit.sum()), kv), flops)
            self._advance(g, new, emit, env.now)

    def _stage_times(self, new, ctx, sampled: int, ranks):
        """costs.stage_times, memoized for steps of a few sequences (a prefill step of one or two
        prompts recurs with the same lengths): it is a pure function of its arguments."""
        if ranks is not None or len(new) > 4:
            return self.costs.stage_times(new, ctx, sampled, ranks)
        key = (new.tobytes(), ctx.tobytes(), sampled)
        got = self._memo.get(key)
        if got is None:
            if len(self._memo) >= 1 << 14:
                self._memo.clear()
            got = self._memo[key] = self.costs.stage_times(new, ctx, sampled, ranks)
        return got

    def _decode_step(self, env, g: _Engine, n: int, decode):
        """A decode-only step: every running sequence processes and emits one token. Timed from the
        batch's size and total context; the batch's arrays wait (EngineState.lag) until needed."""
        if g.counted is not g.ids:
            g.count(self.req.output)
        start, kv = env.now, g.ctx_total + n
        blocks = self._held(g.ctx + 1.0)  # KV tokens the step's blocks hold
        self.kv_now[g.replica, g.index] = blocks
        stage_t, flops = decode(n, g.ctx_total, n)
        if self.pp == 1:
            yield env.timeout(float(stage_t[0]))
        else:
            yield from self._through_stages(env, g.replica, stage_t, self.costs.pp_hop(n))
        now = env.now
        self.log.add((g.replica, g.index, start, now, DECODE, n, n, n, kv), flops)
        g.decoded()
        self.kv_now[g.replica, g.index] = blocks
        held = (self.reserved[g.replica] if g.role == "prefill"
                else blocks if self.pp == 1 else self.kv_now[g.replica].sum())
        if held > self.kv_peak[g.replica]:
            self.kv_peak[g.replica] = held
        if g.finish_in <= 0:
            every = np.ones(n, dtype=bool)
            self._retire(g, every, every & (g.gen >= self.req.output[g.ids]), now)
            g.counted = None

    def _through_stages(self, env, replica: int, stage_t: np.ndarray, hop: float):
        """Pass one step through the replica's pipeline stages, each a resource shared by its engines."""
        for s, res in enumerate(self.stages[replica]):
            with res.request() as req:
                yield req
                yield env.timeout(float(stage_t[s]))
            if s < self.pp - 1 and hop:
                yield env.timeout(hop)

    def _absorb(self, g: _Engine, now: float) -> None:
        """Move the requests that have arrived (or whose KV cache arrived) to the waiting queue."""
        feed, arrival = g.feed, self.req.arrival
        while g.pos < len(feed) and arrival[feed[g.pos]] <= now:
            g.waiting.append(int(feed[g.pos]))
            g.pos += 1
        while g.inbox:
            g.waiting.append(g.inbox.popleft())

    # --- scheduling ----------------------------------------------------------------------------
    def _choose(self, g: _Engine):
        """New tokens per running sequence for the next step (admitting waiting requests); None if none."""
        if self.chunked and g.role != "prefill":
            return self._choose_chunked(g)
        admitted = self._admit(g, self.budget, whole=True)
        if g.role != "decode" and admitted:
            return np.where(np.arange(len(g.ids)) >= len(g.ids) - admitted, g.todo, 0.0)
        if not len(g.ids):
            return None
        refill = g.todo > 1  # evicted requests recomputing their tokens
        if refill.any():
            return np.where(refill, g.todo, 0.0)
        if not self.reserve:
            self._make_room(g)
        return np.ones(len(g.ids)) if len(g.ids) else None

    def _choose_chunked(self, g: _Engine):
        """Token budget: every decode, then prompt chunks in admission order, then new admissions."""
        if not self.reserve:
            self._make_room(g)
        decodes = g.todo == 1
        committed = decodes.sum() + g.todo[~decodes].sum()
        self._admit(g, self.budget - committed, whole=False)
        new = np.where(g.todo == 1, 1.0, 0.0)
        left = self.budget - new.sum()
        free = np.inf if self.reserve else self.capacity - self._others(g) - self._held(g.ctx + new)
        for i in np.flatnonzero(g.todo > 1):  # preempt policy: chunks only into free blocks
            room = self.memory.room(g.ctx[i], free)
            if left <= 0 or room <= 0:
                break
            new[i] = min(g.todo[i], left, room)
            left -= new[i]
            free -= self._paged(g.ctx[i] + new[i]) - self._paged(g.ctx[i])
        return new if new.any() else None

    def _admit(self, g: _Engine, budget: float, whole: bool) -> int:
        """Admit waiting requests FIFO while slots, the token budget and the KV cache allow; how many."""
        held = self.reserve or g.role == "prefill"
        # preempt policy: keep room for one more token of every running sequence (a watermark)
        used = (float(self.reserved[g.replica]) if held else
                self._others(g) + self._held(g.ctx + np.where(g.todo > 1, g.todo, 1.0)))
        rows, tokens = [], 0.0
        while g.waiting and len(g.ids) + len(rows) < self.batch and tokens < budget:
            rid = g.waiting[0]
            gen, ctx, todo, need = self._entry(g, rid)
            if whole and rows and tokens + todo > budget:
                break
            if used + need > self.capacity:
                break
            g.waiting.popleft()
            self.evicted_gen.pop(rid, None)
            rows.append((rid, gen, ctx, todo))
            tokens += todo
            used += need
            if held:
                self.reserved[g.replica] += need
        if rows:
            ids, gen, ctx, todo = (np.array(c) for c in zip(*rows))
            g.ids, g.gen = np.concatenate([g.ids, ids.astype(int)]), np.concatenate([g.gen, gen.astype(int)])
            g.ctx, g.todo = np.concatenate([g.ctx, ctx.astype(float)]), np.concatenate([g.todo, todo.astype(float)])
        return len(rows)

    def _entry(self, g: _Engine, rid: int) -> tuple[int, float, float, int]:
        """(tokens emitted, tokens cached, tokens to process, KV tokens its blocks hold) of a request on admission."""
        p, o = int(self.req.prompt[rid]), int(self.req.output[rid])
        evicted = self.evicted_gen.get(rid)
        if evicted is not None:  # recompute prompt and generated tokens, then emit the next one
            gen, ctx, todo = evicted, 0.0, p + evicted
        elif g.role == "decode":  # the prompt's KV cache arrived; the first token is the next input
            gen, ctx, todo = 1, float(p), 1.0
        else:
            gen, ctx, todo = 0, 0.0, float(p)
        tokens = int(p if g.role == "prefill" else p + o if self.reserve else ctx + todo)
        return gen, ctx, todo, int(self._paged(tokens))

    def _paged(self, tokens):
        """KV tokens the blocks of a sequence holding `tokens` take (array or number; ServeMemory.held)."""
        return self.memory.held(tokens)

    def _held(self, tokens: np.ndarray) -> float:
        """KV tokens the blocks of sequences holding `tokens` each take (ServeMemory.held_total)."""
        return self.memory.held_total(tokens)

    def _others(self, g: _Engine) -> float:
        """KV tokens the replica's other engines held at the end of their last step."""
        row = self.kv_now[g.replica]
        return float(row.sum() - row[g.index])

    def _make_room(self, g: _Engine) -> None:
        """Preempt policy: evict the newest running requests until this step's decode tokens fit (the last
        one too when sibling engines hold the cache: it waits for them)."""
        others = self._others(g)
        while len(g.ids) > (0 if others else 1) and others + self._held(g.ctx + (g.todo == 1)) > self.capacity:
            last = len(g.ids) - 1
            rid = int(g.ids[last])
            self.preempted[rid] += 1
            self.evicted_gen[rid] = int(g.gen[last])
            g.waiting.appendleft(rid)
            g.keep(np.arange(len(g.ids)) < last)

    # --- after a step --------------------------------------------------------------------------
    def _advance(self, g: _Engine, new: np.ndarray, emit: np.ndarray, now: float) -> None:
        """Add the step's tokens to the cache, emit tokens, retire finished requests."""
        g.ctx += new
        g.todo -= new
        g.gen += emit
        ids = g.ids
        first = ids[emit]
        self.first[first] = np.where(np.isnan(self.first[first]), now, self.first[first])
        done = emit & (g.gen >= self.req.output[ids])
        g.todo[emit] = 1.0
        self.kv_now[g.replica, g.index] = self._held(g.ctx)
        held = self.reserved[g.replica] if g.role == "prefill" else self.kv_now[g.replica].sum()
        self.kv_peak[g.replica] = max(self.kv_peak[g.replica], held)
        self._retire(g, emit, done, now)
        g.touch()

    def _retire(self, g: _Engine, emit: np.ndarray, done: np.ndarray, now: float) -> None:
        """Finished requests leave (a prefill replica's every emitting one, to its decode replica)."""
        ids = g.ids
        if done.any():
            self.finish[ids[done]] = now
            self.in_flight -= int(done.sum())
            if self.reserve or g.role == "prefill":
                held = self.req.prompt[ids[done]] + (0 if g.role == "prefill" else self.req.output[ids[done]])
                self.reserved[g.replica] -= int(self._held(held))
        if g.role == "prefill":
            for rid in ids[emit & ~done]:
                self.env.process(self._transfer(g, int(rid)))
        leave = emit if g.role == "prefill" else done
        if leave.any():
            g.keep(~leave)
        if done.any() and self.pp > 1:
            self._wake(self.by_replica[g.replica])  # siblings waiting for the shared cache
        if self.in_flight == 0 and not self.all_done.triggered:
            self.all_done.succeed()

    def _transfer(self, g: _Engine, rid: int):
        """Move one prompt's KV cache from a prefill replica to a decode engine over the fabric."""
        env = self.env
        dst = self.decoders[rid % len(self.decoders)]
        prompt = float(self.req.prompt[rid])
        nbytes = prompt * self.memory.kv_per_token  # on each device of each stage; all ranks send at once
        src, dev = self.devices[g.replica, :, 0], self.devices[dst.replica, :, 0]
        seconds = float(np.max(self.fabric.p2p(nbytes, src, dev, self.costs.cal)))
        with self.links[g.replica].request() as req:
            yield req
            start = env.now
            yield env.timeout(seconds)
        self.reserved[g.replica] -= int(self._paged(prompt))
        tier = 1 if str(self.fabric.tier(src[0], dev[0])) == "nvlink" else 2
        self.transfers.append((rid, g.replica, start, env.now, float(nbytes.sum()) * self.scn.layout.tp, tier))
        dst.inbox.append(rid)
        self._wake([dst, *self.by_replica[g.replica]])

    @staticmethod
    def _wake(engines) -> None:
        """Wake the engines that sleep waiting for work or cache."""
        for engine in engines:
            if engine.wake is not None and not engine.wake.triggered:
                engine.wake.succeed()

    # --- result --------------------------------------------------------------------------------
    def _timeline(self, end: float) -> ServeTimeline:
        cols = ("request", "replica", "start", "end", "bytes", "tier")
        data = list(zip(*self.transfers)) if self.transfers else [()] * len(cols)
        transfers = {c: np.array(v, dtype=float if c in ("start", "end", "bytes") else int) for c, v in zip(cols, data)}
        return ServeTimeline(requests=self.req, first_token=self.first, finish=self.finish, rejected=self.rejected,
                             preemptions=self.preempted, roles=self.roles, engines=self.pp, steps=self.log.columns(),
                             transfers=transfers, kv_tokens_peak=self.kv_peak, end_time=end,
                             summary=self.summary, attn_flops=self.log.attn_flops)


def _kind(todo: np.ndarray) -> int:
    """PREFILL, DECODE or MIXED for the scheduled sequences' tokens-to-go before the step."""
    pre = bool((todo > 1).any())
    dec = bool((todo == 1).any())
    return MIXED if pre and dec else PREFILL if pre else DECODE


def simulate_requests(scn, costs: StepCosts | None = None, fabric: Fabric | None = None) -> ServeTimeline:
    """Run the request-level simulation of a serve scenario."""
    return Simulation(scn, costs, fabric).run()
