// A small reader of classic pcap files (what `tcpdump -w` writes) for the tests: IPv4 and IPv6
// TCP over Ethernet, Linux cooked (SLL, SLL2), BSD loopback or raw IP, with each direction of
// each TCP connection reassembled by sequence number (retransmissions and overlaps counted
// once, out-of-order segments put back in order), and a TLS record walker to check what a
// stream carries.

export interface TcpStream {
  /** `srcHost:srcPort>dstHost:dstPort` */
  readonly key: string;
  readonly srcPort: number;
  readonly dstPort: number;
  /** The payload bytes in sequence order. */
  readonly data: Buffer;
  /** Bytes missing from the capture between the first and the last segment (0: complete). */
  readonly gaps: number;
  /** The first payload byte came right after the SYN (the capture saw the connection start). */
  readonly fromStart: boolean;
}

interface Segment {
  readonly seq: number;
  readonly payload: Buffer;
}

interface Flow {
  readonly srcPort: number;
  readonly dstPort: number;
  isn: number | null;
  readonly segments: Segment[];
}

const LINKTYPE_NULL = 0;
const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_LOOP = 108;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;

/** Every TCP direction in a pcap file, reassembled. */
export function readPcapStreams(file: Buffer): TcpStream[] {
  if (file.length < 24) throw new Error('pcap: file shorter than its global header');
  const magic = file.readUInt32LE(0);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error(`pcap: unknown magic 0x${magic.toString(16)} (pcapng is not read here: use tcpdump -w)`);
  const u32 = (o: number): number => (le ? file.readUInt32LE(o) : file.readUInt32BE(o));
  const linktype = u32(20) & 0x0fffffff;
  const flows = new Map<string, Flow>();
  let off = 24;
  while (off + 16 <= file.length) {
    const incl = u32(off + 8);
    const start = off + 16;
    if (start + incl > file.length) break; // a capture cut short while writing
    onPacket(file.subarray(start, start + incl), linktype, flows);
    off = start + incl;
  }
  return [...flows.entries()].map(([key, f]) => assemble(key, f));
}

function onPacket(p: Buffer, linktype: number, flows: Map<string, Flow>): void {
  let ip: Buffer;
  let etherType: number;
  if (linktype === LINKTYPE_ETHERNET) {
    if (p.length < 14) return;
    etherType = p.readUInt16BE(12);
    let o = 14;
    // 802.1Q tags.
    while ((etherType === 0x8100 || etherType === 0x88a8) && p.length >= o + 4) {
      etherType = p.readUInt16BE(o + 2);
      o += 4;
    }
    ip = p.subarray(o);
  } else if (linktype === LINKTYPE_LINUX_SLL) {
    if (p.length < 16) return;
    etherType = p.readUInt16BE(14);
    ip = p.subarray(16);
  } else if (linktype === LINKTYPE_LINUX_SLL2) {
    if (p.length < 20) return;
    etherType = p.readUInt16BE(0);
    ip = p.subarray(20);
  } else if (linktype === LINKTYPE_NULL || linktype === LINKTYPE_LOOP) {
    if (p.length < 4) return;
    ip = p.subarray(4);
    etherType = ip.length > 0 && ip[0] !== undefined && ip[0] >> 4 === 6 ? 0x86dd : 0x0800;
  } else if (linktype === LINKTYPE_RAW) {
    ip = p;
    etherType = ip.length > 0 && ip[0] !== undefined && ip[0] >> 4 === 6 ? 0x86dd : 0x0800;
  } else {
    throw new Error(`pcap: link type ${linktype} is not read here`);
  }
  let tcp: Buffer;
  let src: string;
  let dst: string;
  if (etherType === 0x0800) {
    if (ip.length < 20) return;
    const ihl = ((ip[0] as number) & 0x0f) * 4;
    if (ip[9] !== 6) return;
    const total = ip.readUInt16BE(2);
    src = [...ip.subarray(12, 16)].join('.');
    dst = [...ip.subarray(16, 20)].join('.');
    tcp = ip.subarray(ihl, Math.min(total, ip.length));
  } else if (etherType === 0x86dd) {
    if (ip.length < 40 || ip[6] !== 6) return; // no extension headers expected on loopback
    src = ip.subarray(8, 24).toString('hex');
    dst = ip.subarray(24, 40).toString('hex');
    tcp = ip.subarray(40, Math.min(40 + ip.readUInt16BE(4), ip.length));
  } else {
    return;
  }
  if (tcp.length < 20) return;
  const srcPort = tcp.readUInt16BE(0);
  const dstPort = tcp.readUInt16BE(2);
  const seq = tcp.readUInt32BE(4);
  const dataOff = ((tcp[12] as number) >> 4) * 4;
  const flags = tcp[13] as number;
  const key = `${src}:${srcPort}>${dst}:${dstPort}`;
  let f = flows.get(key);
  if (f === undefined) {
    f = { srcPort, dstPort, isn: null, segments: [] };
    flows.set(key, f);
  }
  // SYN: the first payload byte has sequence number ISN + 1.
  if ((flags & 0x02) !== 0) f.isn = seq;
  const payload = tcp.subarray(dataOff);
  if (payload.length > 0) f.segments.push({ seq, payload: Buffer.from(payload) });
}

/** Sequence arithmetic modulo 2^32, relative to `base`. */
function rel(seq: number, base: number): number {
  return (seq - base + 0x1_0000_0000) % 0x1_0000_0000;
}

function assemble(key: string, f: Flow): TcpStream {
  const first = f.segments[0];
  if (first === undefined) return { key, srcPort: f.srcPort, dstPort: f.dstPort, data: Buffer.alloc(0), gaps: 0, fromStart: f.isn !== null };
  const base = f.isn === null ? first.seq : (f.isn + 1) >>> 0;
  const sorted = [...f.segments].sort((a, b) => rel(a.seq, base) - rel(b.seq, base));
  const out: Buffer[] = [];
  let next = 0;
  let gaps = 0;
  for (const s of sorted) {
    const at = rel(s.seq, base);
    const end = at + s.payload.length;
    if (end <= next) continue; // a retransmission of what we have
    if (at > next) {
      gaps += at - next;
      next = at;
    }
    out.push(s.payload.subarray(next - at));
    next = end;
  }
  return { key, srcPort: f.srcPort, dstPort: f.dstPort, data: Buffer.concat(out), gaps, fromStart: f.isn !== null && rel(first.seq, base) >= 0 };
}

export interface TlsRecordCheck {
  /** Records read. */
  readonly records: number;
  /** Content types seen, in order of first appearance. */
  readonly types: readonly number[];
  /** null when every byte is framed as a record; otherwise what is wrong and where. */
  readonly problem: string | null;
}

/**
 * Walks `data` as back-to-back TLS records (RFC 8446 §5.1): content type 20..23, version 0x03xx,
 * length at most 2^14 + 256 (TLSCiphertext's bound). A stream cut at the end (the capture
 * stopped mid-record) is fine; any other byte outside a record header's promise is a problem.
 */
export function checkTlsRecords(data: Buffer): TlsRecordCheck {
  let off = 0;
  let records = 0;
  const types: number[] = [];
  while (off < data.length) {
    if (off + 5 > data.length) return { records, types, problem: null };
    const type = data[off] as number;
    const major = data[off + 1] as number;
    const len = data.readUInt16BE(off + 3);
    if (type < 20 || type > 23) return { records, types, problem: `byte ${off}: content type ${type} is not a TLS record` };
    if (major !== 3) return { records, types, problem: `byte ${off}: record version ${major}.${data[off + 2]}` };
    if (len === 0 && type !== 23) return { records, types, problem: `byte ${off}: empty ${type} record` };
    if (len > 16384 + 256) return { records, types, problem: `byte ${off}: record length ${len} over 2^14 + 256` };
    if (!types.includes(type)) types.push(type);
    records++;
    off += 5 + len;
  }
  return { records, types, problem: null };
}
