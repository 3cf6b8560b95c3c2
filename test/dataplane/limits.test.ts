// The connection gates and request limiters of src/dataplane/limits.ts, without sockets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMITTED, ConnectionCounts, OVER_LISTENER, OVER_PRESSURE, OVER_PROXY, OVER_SOURCE, RequestLimiter, connectionRefusal, perWorker } from '../../src/dataplane/limits.ts';
import { LoadPressure } from '../../src/dataplane/pressure.ts';
import { allocateConnectionCounts, openConnections } from '../../src/metrics/counters.ts';

test('connection limits hold over all workers: per listener, then for the whole proxy', () => {
  const buf = allocateConnectionCounts(2, 3);
  const w0 = new ConnectionCounts(buf, 0, 2, 3, 5);
  const w1 = new ConnectionCounts(buf, 1, 2, 3, 5);
  const a0 = w0.gate(1, 3);
  const a1 = w1.gate(1, 3);
  assert.equal(a0.tryOpen(), ADMITTED);
  assert.equal(a1.tryOpen(), ADMITTED);
  assert.equal(a1.tryOpen(), ADMITTED);
  // Listener 1 holds 3 over both workers: the 4th is refused by either.
  assert.equal(a0.tryOpen(), OVER_LISTENER);
  assert.equal(a1.tryOpen(), OVER_LISTENER);
  const b0 = w0.gate(2, 10);
  assert.equal(b0.tryOpen(), ADMITTED);
  assert.equal(b0.tryOpen(), ADMITTED);
  // 5 open over the proxy: the proxy limit refuses the next on any listener.
  assert.equal(b0.tryOpen(), OVER_PROXY);
  assert.deepEqual(openConnections(buf, 2, 3), [0, 3, 2]);
  a1.close();
  assert.equal(b0.tryOpen(), ADMITTED);
  assert.deepEqual(openConnections(buf, 2, 3), [0, 2, 3]);
});

test('a restarted worker starts from zero: its predecessor connections died with it', () => {
  const buf = allocateConnectionCounts(2, 1);
  const g = new ConnectionCounts(buf, 1, 2, 1, 100).gate(0, 2);
  assert.equal(g.tryOpen(), ADMITTED);
  assert.equal(g.tryOpen(), ADMITTED);
  assert.equal(g.tryOpen(), OVER_LISTENER);
  const again = new ConnectionCounts(buf, 1, 2, 1, 100).gate(0, 2);
  assert.equal(again.tryOpen(), ADMITTED);
  // A close after the restart never takes a count below zero.
  again.close();
  again.close();
  assert.deepEqual(openConnections(buf, 2, 1), [0]);
});

test('without a shared buffer a worker counts alone', () => {
  const g = new ConnectionCounts(null, 3, 4, 2, 1).gate(1, 10);
  assert.equal(g.tryOpen(), ADMITTED);
  assert.equal(g.tryOpen(), OVER_PROXY);
});

test('request limiter: the listener limit first, then each source has its own share', () => {
  const l = new RequestLimiter(4, 2);
  assert.equal(l.admit('a'), ADMITTED);
  assert.equal(l.admit('a'), ADMITTED);
  assert.equal(l.admit('a'), OVER_SOURCE);
  assert.equal(l.admit('b'), ADMITTED);
  assert.equal(l.admit(null), ADMITTED);
  assert.equal(l.admit('c'), OVER_LISTENER);
  assert.equal(l.inFlight, 4);
  l.release('a');
  assert.equal(l.admit('a'), ADMITTED);
  for (const s of ['a', 'a', 'b', null]) l.release(s);
  assert.equal(l.inFlight, 0);
  assert.equal(l.admit('c'), ADMITTED);
});

test('a worker share of a request limit is ceil(limit / workers), at least 1', () => {
  assert.equal(perWorker(1024, 1), 1024);
  assert.equal(perWorker(1024, 3), 342);
  assert.equal(perWorker(1, 8), 1);
  assert.equal(perWorker(10, 0), 10);
});

test('pressure: enters above -max-event-loop-delay, leaves below half of it; 0 never sheds', () => {
  const p = new LoadPressure(100);
  assert.deepEqual([20, 99, 100, 101].map((d) => p.judge(d)), [false, false, false, true]);
  // Hysteresis: 60 ms is under the limit but not under half of it, so the shedding goes on.
  assert.deepEqual([60, 50, 49, 60].map((d) => p.judge(d)), [true, true, false, false]);
  assert.equal(p.windows, 3);
  const off = new LoadPressure(0);
  assert.equal(off.judge(10_000), false);
  assert.equal(off.underPressure, false);
});

test('under pressure, the gate refuses new connections and the limiter new requests; admitted ones release as usual', () => {
  const p = new LoadPressure(100);
  const gate = new ConnectionCounts(null, 0, 1, 2, 100).gate(1, 10, p);
  const limiter = new RequestLimiter(10, 5, p);
  assert.equal(gate.tryOpen(), ADMITTED);
  assert.equal(limiter.admit('web'), ADMITTED);
  p.judge(500);
  assert.equal(gate.tryOpen(), OVER_PRESSURE);
  assert.equal(limiter.admit('web'), OVER_PRESSURE);
  assert.equal(limiter.inFlight, 1, 'a refused request is not counted');
  assert.equal(connectionRefusal(OVER_PRESSURE), 'overload');
  limiter.release('web');
  gate.close();
  p.judge(10);
  assert.equal(gate.tryOpen(), ADMITTED);
  assert.equal(limiter.admit('web'), ADMITTED);
  // The listener limit still comes first: a full listener says overflow, not pressure.
  const full = new RequestLimiter(1, Infinity, p);
  assert.equal(full.admit(null), ADMITTED);
  p.judge(500);
  assert.equal(full.admit(null), OVER_LISTENER);
});

test('the pressure judge samples a blocked event loop', async () => {
  const p = new LoadPressure(40);
  p.start(50);
  try {
    const until = Date.now() + 300;
    while (Date.now() < until) {
      // busy: the loop cannot run its timers
    }
    await new Promise((r) => setTimeout(r, 60));
    assert.ok(p.windows > 0, 'a 300 ms block was not seen');
  } finally {
    p.stop();
  }
  assert.equal(p.underPressure, false, 'stop() clears the state');
});
