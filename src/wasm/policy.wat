;; The WebAssembly twin of PolicyTableReader.decide (src/authz/table.ts): reads the published
;; policy table in place in the shared memory and returns the same packed decision integer.
;; Layout: src/authz/layout.ts (authoritative; every constant below is named after it).
;; Build: `npm run build:wasm` (scripts/build-wasm.ts) writes policy.wasm; test/wasm/drift.test.ts
;; fails when the committed binary differs from a fresh build.
;;
;; Memories (multi-memory, shipped in Node ≥ 22 / V8 ≥ 12.0):
;;   0 = the policy table, imported: the writer's shared WebAssembly.Memory. The declared maximum is
;;       MAX_MEMORY_PAGES (32767); an import matches any shared memory whose maximum is ≤ that,
;;       i.e. every PolicyTableWriter (maximumPages is capped at 32767).
;;   1 = scratch, private to this instance (not shared), exported as "scratch". The shared layout
;;       has no per-reader room for names (header words 10..15 are reserved for arenas), so the
;;       TypeScript wrapper UTF-8-encodes the names here:
;;         [0, 2048)     source name   (MAX_NAME_BYTES)
;;         [2048, 4096)  destination name
;;         [4096, 4104)  le32(srcId) ‖ le32(dstId), the rule-table hash key
;;
;; Reader epoch protocol (table.ts R1–R5) runs inside decide() with sequentially consistent
;; i32.atomic.load/store on memory 0, using the READER_EPOCH byte address given to init().
;;
;; Name lengths: bit 30 of srcLen/dstLen (REUSE) says "the bytes in scratch are the same as on the
;; previous call"; then the id cached for that name is reused when it was computed for the same
;; generation (the TS reader's one-entry caches). A length of 0 or > 2048 never matches a name
;; (the wrapper passes 2049 for a string that cannot be encoded: lone surrogates).
;;
;; decide() result: the decision int of table.ts (code | (rule + 1) << 3), or -1 (NEED_REFRESH)
;; when the half to read ends beyond the byte limit the wrapper last confirmed with
;; memory.buffer (after growth by another thread); the epoch is then already cleared and the
;; wrapper refreshes and calls again.
(module
  (import "env" "memory" (memory $m 1 32767 shared))
  (memory $s 1)
  (export "scratch" (memory $s))

  ;; byte address of READER_EPOCH[slot] in memory 0
  (global $epoch (mut i32) (i32.const 0))
  ;; bytes of memory 0 this instance may read (confirmed by the wrapper)
  (global $limit (mut i32) (i32.const 0))
  ;; generation read by the last decide()
  (global $gen (mut i32) (i32.const 0))
  ;; one-entry name → id caches, valid for generation $srcGen / $dstGen only (0 = invalid)
  (global $srcGen (mut i32) (i32.const 0))
  (global $srcId (mut i32) (i32.const -1))
  (global $dstGen (mut i32) (i32.const 0))
  (global $dstId (mut i32) (i32.const -1))

  (func (export "init") (param $epochAddr i32) (param $limit i32)
    (global.set $epoch (local.get $epochAddr))
    (global.set $limit (local.get $limit))
    (global.set $srcGen (i32.const 0))
    (global.set $dstGen (i32.const 0)))

  (func (export "setLimit") (param $limit i32)
    (global.set $limit (local.get $limit)))

  (func (export "lastGeneration") (result i32)
    (global.get $gen))

  ;; Clears READER_EPOCH[slot] (R5); exported so the wrapper can also do it after a trap.
  (func $leave (export "leave")
    (i32.atomic.store (global.get $epoch) (i32.const 0)))

  ;; `n` SipRounds of HalfSipHash on (v0, v1, v2, v3).
  (func $rounds (param $v0 i32) (param $v1 i32) (param $v2 i32) (param $v3 i32) (param $n i32)
                (result i32 i32 i32 i32)
    (loop $round
      (local.set $v0 (i32.add (local.get $v0) (local.get $v1)))
      (local.set $v1 (i32.xor (i32.rotl (local.get $v1) (i32.const 5)) (local.get $v0)))
      (local.set $v0 (i32.rotl (local.get $v0) (i32.const 16)))
      (local.set $v2 (i32.add (local.get $v2) (local.get $v3)))
      (local.set $v3 (i32.xor (i32.rotl (local.get $v3) (i32.const 8)) (local.get $v2)))
      (local.set $v0 (i32.add (local.get $v0) (local.get $v3)))
      (local.set $v3 (i32.xor (i32.rotl (local.get $v3) (i32.const 7)) (local.get $v0)))
      (local.set $v2 (i32.add (local.get $v2) (local.get $v1)))
      (local.set $v1 (i32.xor (i32.rotl (local.get $v1) (i32.const 13)) (local.get $v2)))
      (local.set $v2 (i32.rotl (local.get $v2) (i32.const 16)))
      (br_if $round (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (local.get $v0) (local.get $v1) (local.get $v2) (local.get $v3))

  ;; HalfSipHash-2-4, 32-bit tag, of scratch[p, p + len) with key (k0, k1): src/authz/halfsiphash.ts.
  (func $hash (export "hash") (param $k0 i32) (param $k1 i32) (param $p i32) (param $len i32) (result i32)
    (local $v0 i32) (local $v1 i32) (local $v2 i32) (local $v3 i32)
    (local $end i32) (local $wend i32) (local $m i32) (local $tail i32) (local $last i32)
    (local.set $v0 (local.get $k0))
    (local.set $v1 (local.get $k1))
    (local.set $v2 (i32.xor (i32.const 0x6c796765) (local.get $k0)))
    (local.set $v3 (i32.xor (i32.const 0x74656462) (local.get $k1)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $wend (i32.add (local.get $p) (i32.and (local.get $len) (i32.const -4))))
    (loop $absorb
      (if (i32.lt_u (local.get $p) (local.get $wend))
        (then
          (local.set $m (i32.load $s (local.get $p)))
          (local.set $p (i32.add (local.get $p) (i32.const 4))))
        (else
          ;; final word: 0..3 tail bytes, (len mod 256) in the top byte
          (local.set $m (i32.shl (local.get $len) (i32.const 24)))
          (local.set $tail (i32.sub (local.get $end) (local.get $p)))
          (if (i32.ge_u (local.get $tail) (i32.const 3))
            (then (local.set $m (i32.or (local.get $m)
              (i32.shl (i32.load8_u $s offset=2 (local.get $p)) (i32.const 16))))))
          (if (i32.ge_u (local.get $tail) (i32.const 2))
            (then (local.set $m (i32.or (local.get $m)
              (i32.shl (i32.load8_u $s offset=1 (local.get $p)) (i32.const 8))))))
          (if (i32.ge_u (local.get $tail) (i32.const 1))
            (then (local.set $m (i32.or (local.get $m) (i32.load8_u $s (local.get $p))))))
          (local.set $last (i32.const 1))))
      (local.set $v3 (i32.xor (local.get $v3) (local.get $m)))
      (call $rounds (local.get $v0) (local.get $v1) (local.get $v2) (local.get $v3) (i32.const 2))
      (local.set $v3) (local.set $v2) (local.set $v1) (local.set $v0)
      (local.set $v0 (i32.xor (local.get $v0) (local.get $m)))
      (br_if $absorb (i32.eqz (local.get $last))))
    (local.set $v2 (i32.xor (local.get $v2) (i32.const 0xff)))
    (call $rounds (local.get $v0) (local.get $v1) (local.get $v2) (local.get $v3) (i32.const 4))
    (local.set $v3) (local.set $v2) (local.set $v1) (local.set $v0)
    (i32.xor (local.get $v1) (local.get $v3)))

  ;; memory0[a, a + len) == scratch[b, b + len)
  (func $equal (param $a i32) (param $b i32) (param $len i32) (result i32)
    (local $wend i32) (local $end i32)
    (local.set $end (i32.add (local.get $b) (local.get $len)))
    (local.set $wend (i32.add (local.get $b) (i32.and (local.get $len) (i32.const -4))))
    (block $done
      (loop $words
        (br_if $done (i32.ge_u (local.get $b) (local.get $wend)))
        (if (i32.ne (i32.load $m (local.get $a)) (i32.load $s (local.get $b)))
          (then (return (i32.const 0))))
        (local.set $a (i32.add (local.get $a) (i32.const 4)))
        (local.set $b (i32.add (local.get $b) (i32.const 4)))
        (br $words)))
    (block $done2
      (loop $bytes
        (br_if $done2 (i32.ge_u (local.get $b) (local.get $end)))
        (if (i32.ne (i32.load8_u $m (local.get $a)) (i32.load8_u $s (local.get $b)))
          (then (return (i32.const 0))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $bytes)))
    (i32.const 1))

  ;; Interned id of scratch[p, p + len) in the half at byte offset $half, or -1 (table.ts #lookupName).
  (func $lookupName (param $half i32) (param $k0 i32) (param $k1 i32) (param $p i32) (param $len i32)
                    (result i32)
    (local $cap i32) (local $count i32) (local $slots i32) (local $dir i32) (local $h i32)
    (local $mask i32) (local $i i32) (local $probes i32) (local $s i32) (local $id i32) (local $d i32)
    (if (i32.or (i32.eqz (local.get $len)) (i32.gt_u (local.get $len) (i32.const 2048)))
      (then (return (i32.const -1))))
    (local.set $count (i32.load $m offset=24 (local.get $half)))          ;; TBL_NAME_COUNT
    (local.set $cap (i32.load $m offset=28 (local.get $half)))            ;; TBL_NAME_CAP
    (local.set $dir (i32.add (local.get $half) (i32.load $m offset=40 (local.get $half))))    ;; TBL_NAME_DIR
    (local.set $slots (i32.add (local.get $half) (i32.load $m offset=44 (local.get $half))))  ;; TBL_NAME_TABLE
    (local.set $h (call $hash (local.get $k0) (local.get $k1) (local.get $p) (local.get $len)))
    (local.set $mask (i32.sub (local.get $cap) (i32.const 1)))
    (local.set $i (i32.and (local.get $h) (local.get $mask)))
    (block $miss
      (loop $probe
        ;; load factor ≤ 0.5 guarantees an empty slot; `probes < cap` only bounds a corrupt table
        (br_if $miss (i32.ge_s (local.get $probes) (local.get $cap)))
        (local.set $s (i32.add (local.get $slots) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $id (i32.load $m offset=4 (local.get $s)))               ;; NAME_SLOT_ID
        (br_if $miss (i32.eqz (local.get $id)))
        (if (i32.and (i32.eq (i32.load $m (local.get $s)) (local.get $h))  ;; NAME_SLOT_HASH
                     (i32.lt_s (local.get $id) (local.get $count)))
          (then
            (local.set $d (i32.add (local.get $dir) (i32.shl (local.get $id) (i32.const 4))))
            (if (i32.eq (i32.load $m offset=4 (local.get $d)) (local.get $len))  ;; NAME_DIR_LENGTH
              (then
                (if (call $equal
                      (i32.add (local.get $half) (i32.load $m (local.get $d)))  ;; NAME_DIR_OFFSET
                      (local.get $p) (local.get $len))
                  (then (return (local.get $id))))))))
        (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (local.get $mask)))
        (local.set $probes (i32.add (local.get $probes) (i32.const 1)))
        (br $probe)))
    (i32.const -1))

  ;; Index of the rule (srcId, dstId), or -1 (table.ts #findRule).
  (func $findRule (param $half i32) (param $k0 i32) (param $k1 i32) (param $a i32) (param $b i32)
                  (result i32)
    (local $cap i32) (local $slots i32) (local $rules i32) (local $mask i32) (local $i i32)
    (local $probes i32) (local $v i32) (local $e i32)
    (local.set $cap (i32.load $m offset=36 (local.get $half)))            ;; TBL_RULE_CAP
    (local.set $slots (i32.add (local.get $half) (i32.load $m offset=56 (local.get $half))))  ;; TBL_RULE_TABLE
    (local.set $rules (i32.add (local.get $half) (i32.load $m offset=60 (local.get $half))))  ;; TBL_RULES
    (local.set $mask (i32.sub (local.get $cap) (i32.const 1)))
    (i32.store $s offset=4096 (i32.const 0) (local.get $a))
    (i32.store $s offset=4100 (i32.const 0) (local.get $b))
    (local.set $i (i32.and (call $hash (local.get $k0) (local.get $k1) (i32.const 4096) (i32.const 8))
                           (local.get $mask)))
    (block $miss
      (loop $probe
        (br_if $miss (i32.ge_s (local.get $probes) (local.get $cap)))
        (local.set $v (i32.load $m (i32.add (local.get $slots) (i32.shl (local.get $i) (i32.const 2)))))
        (br_if $miss (i32.eqz (local.get $v)))
        (local.set $e (i32.add (local.get $rules)
                               (i32.shl (i32.sub (local.get $v) (i32.const 1)) (i32.const 4))))
        (if (i32.and (i32.eq (i32.load $m (local.get $e)) (local.get $a))          ;; RULE_SRC
                     (i32.eq (i32.load $m offset=4 (local.get $e)) (local.get $b)))  ;; RULE_DST
          (then (return (i32.sub (local.get $v) (i32.const 1)))))
        (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (local.get $mask)))
        (local.set $probes (i32.add (local.get $probes) (i32.const 1)))
        (br $probe)))
    (i32.const -1))

  ;; The decision for generation $g, whose half starts at byte $half (table.ts #evaluate).
  (func $evaluate (param $g i32) (param $half i32) (param $sp i32) (param $sl i32)
                  (param $dp i32) (param $dl i32) (result i32)
    (local $k0 i32) (local $k1 i32) (local $src i32) (local $dst i32) (local $dir i32) (local $r i32)
    (local.set $k0 (i32.load $m offset=12 (local.get $half)))             ;; TBL_KEY0
    (local.set $k1 (i32.load $m offset=16 (local.get $half)))             ;; TBL_KEY1
    (if (i32.and (i32.ne (i32.and (local.get $sl) (i32.const 0x40000000)) (i32.const 0))
                 (i32.eq (global.get $srcGen) (local.get $g)))
      (then (local.set $src (global.get $srcId)))
      (else
        (local.set $src (call $lookupName (local.get $half) (local.get $k0) (local.get $k1)
                          (local.get $sp) (i32.and (local.get $sl) (i32.const 0x3fffffff))))
        (global.set $srcGen (local.get $g))
        (global.set $srcId (local.get $src))))
    (if (i32.and (i32.ne (i32.and (local.get $dl) (i32.const 0x40000000)) (i32.const 0))
                 (i32.eq (global.get $dstGen) (local.get $g)))
      (then (local.set $dst (global.get $dstId)))
      (else
        (local.set $dst (call $lookupName (local.get $half) (local.get $k0) (local.get $k1)
                          (local.get $dp) (i32.and (local.get $dl) (i32.const 0x3fffffff))))
        (global.set $dstGen (local.get $g))
        (global.set $dstId (local.get $dst))))
    ;; Consul precedence: 9 exact → exact, 8 * → exact, 6 exact → *, 5 * → *; the first hit wins.
    (local.set $r (i32.const -1))
    (local.set $dir (i32.add (local.get $half) (i32.load $m offset=40 (local.get $half))))  ;; TBL_NAME_DIR
    (if (i32.and (i32.gt_s (local.get $src) (i32.const 0)) (i32.gt_s (local.get $dst) (i32.const 0)))
      (then (local.set $r (call $findRule (local.get $half) (local.get $k0) (local.get $k1)
                            (local.get $src) (local.get $dst)))))
    (if (i32.and (i32.lt_s (local.get $r) (i32.const 0)) (i32.gt_s (local.get $dst) (i32.const 0)))
      (then (local.set $r (i32.sub                                         ;; NAME_DIR_FROM_ANY
        (i32.load $m offset=8 (i32.add (local.get $dir) (i32.shl (local.get $dst) (i32.const 4))))
        (i32.const 1)))))
    (if (i32.and (i32.lt_s (local.get $r) (i32.const 0)) (i32.gt_s (local.get $src) (i32.const 0)))
      (then (local.set $r (i32.sub                                         ;; NAME_DIR_TO_ANY
        (i32.load $m offset=12 (i32.add (local.get $dir) (i32.shl (local.get $src) (i32.const 4))))
        (i32.const 1)))))
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then (local.set $r (i32.sub (i32.load $m offset=64 (local.get $half)) (i32.const 1)))))  ;; TBL_ANY_TO_ANY
    (if (i32.ge_s (local.get $r) (i32.const 0))
      (then
        (return (i32.or
          (i32.load $m offset=8                                            ;; RULE_ACTION
            (i32.add (i32.add (local.get $half) (i32.load $m offset=60 (local.get $half)))  ;; TBL_RULES
                     (i32.shl (local.get $r) (i32.const 4))))
          (i32.shl (i32.add (local.get $r) (i32.const 1)) (i32.const 3))))))
    ;; default policy: TBL_FLAGS bit 0 → DEFAULT_ALLOW (4), else DEFAULT_DENY (5)
    (select (i32.const 4) (i32.const 5)
      (i32.and (i32.load $m offset=20 (local.get $half)) (i32.const 1))))

  ;; Interned id of the source on the last decide(), valid for lastGeneration() (-1: not a name).
  (func (export "lastSrcId") (result i32)
    (global.get $srcId))

  ;; decide() for a source whose id the wrapper already knows for generation $idGen (its
  ;; per-generation name → id cache): when the announced generation is another one, returns -2
  ;; (STALE) with the epoch cleared, and the wrapper decides by name instead.
  (func (export "decideId") (param $id i32) (param $idGen i32) (param $dp i32) (param $dl i32) (result i32)
    (global.set $srcGen (local.get $idGen))
    (global.set $srcId (local.get $id))
    (call $decideIn (local.get $idGen) (i32.const 0) (i32.const 0x40000000) (local.get $dp) (local.get $dl)))

  (func (export "decide") (param $sp i32) (param $sl i32) (param $dp i32) (param $dl i32) (result i32)
    (call $decideIn (i32.const 0) (local.get $sp) (local.get $sl) (local.get $dp) (local.get $dl)))

  ;; $want: 0, or the only generation the caller's source id is valid for.
  (func $decideIn (param $want i32) (param $sp i32) (param $sl i32) (param $dp i32) (param $dl i32) (result i32)
    (local $g i32) (local $now i32) (local $h4 i32) (local $half i32) (local $end i32) (local $r i32)
    ;; R1–R3: announce a generation that is still current
    (local.set $g (i32.atomic.load (i32.const 8)))                   ;; HDR_GENERATION
    (block $announced
      (loop $retry
        (i32.atomic.store (global.get $epoch) (local.get $g))
        (local.set $now (i32.atomic.load (i32.const 8)))
        (br_if $announced (i32.eq (local.get $now) (local.get $g)))
        (local.set $g (local.get $now))
        (br $retry)))
    (global.set $gen (local.get $g))
    (if (i32.and (i32.ne (local.get $want) (i32.const 0)) (i32.ne (local.get $want) (local.get $g)))
      (then
        (call $leave)
        (global.set $srcGen (i32.const 0))
        (return (i32.const -2))))
    ;; nothing published yet: fail closed
    (if (i32.eqz (local.get $g))
      (then
        (call $leave)
        (return (i32.const 5))))
    (local.set $h4 (i32.shl (i32.and (local.get $g) (i32.const 1)) (i32.const 2)))
    (local.set $half (i32.load $m offset=12 (local.get $h4)))            ;; HDR_HALF_OFFSET[h]
    (local.set $end (i32.add (local.get $half) (i32.load $m offset=20 (local.get $h4))))  ;; HDR_HALF_BYTES[h]
    (if (i32.gt_u (local.get $end) (global.get $limit))
      (then
        (call $leave)
        (global.set $srcGen (i32.const 0))
        (global.set $dstGen (i32.const 0))
        (return (i32.const -1))))
    ;; R4
    (local.set $r (call $evaluate (local.get $g) (local.get $half)
                    (local.get $sp) (local.get $sl) (local.get $dp) (local.get $dl)))
    ;; R5
    (call $leave)
    (local.get $r))
)
