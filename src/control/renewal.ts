// When to renew a leaf certificate: a pure function, so the schedule is testable without a
// clock. Consul's agent renews at a random point between 60 % and 90 % of the lifetime
// (agent/leafcert: spreads a fleet's renewals so they do not hit the CA at once), at once
// past 90 %, and at once for lifetimes under 10 minutes.

const MIN_FRACTION = 0.6;
const SPREAD = 0.3;
const SHORT_LIFETIME_MS = 10 * 60_000;

/** @param random a number in [0, 1), injected (Math.random in production). */
export function renewalDelayMs(validAfterMs: number, validBeforeMs: number, nowMs: number, random: number): number {
  const lifetime = validBeforeMs - validAfterMs;
  if (!(lifetime > SHORT_LIFETIME_MS)) return 0;
  const at = validAfterMs + lifetime * (MIN_FRACTION + SPREAD * Math.min(Math.max(random, 0), 1));
  // setTimeout's limit is 2^31-1 ms (~24.8 days); longer waits are re-armed on expiry.
  return Math.min(Math.max(0, Math.round(at - nowMs)), 2 ** 31 - 1);
}
