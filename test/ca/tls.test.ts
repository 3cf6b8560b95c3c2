// Real mTLS over real sockets with certificates from our CA: what a data-plane listener
// will do. The certificates are issued at the current wall-clock time because OpenSSL
// checks validity against the real clock during the handshake; everything else is
// hermetic (127.0.0.1, port 0, generated keys).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createLeafCsr, generateRoot, signLeafCsr, type RootMaterial } from '../../src/ca/authority.ts';
import { readCertIdentity } from '../../src/ca/der.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { CLUSTER_ID, DC, TD } from './helpers.ts';

type Leaf = { cert: string; key: string; uri: string };

let rootA: RootMaterial;
let rootB: RootMaterial;
let web: Leaf;
let api: Leaf;
let impostor: Leaf;

async function issue(root: RootMaterial, service: string, now: Date): Promise<Leaf> {
  const uri = serviceSpiffeId(TD, 'default', DC, service);
  const { csrPem, keyPem } = await createLeafCsr(uri);
  const issued = await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now });
  return { cert: issued.CertPEM, key: keyPem, uri };
}

before(async () => {
  const now = new Date();
  rootA = await generateRoot({ clusterId: CLUSTER_ID, now });
  // Same cluster ID, so same trust domain and same-looking SPIFFE IDs: only the CA differs.
  rootB = await generateRoot({ clusterId: CLUSTER_ID, now });
  web = await issue(rootA, 'web', now);
  api = await issue(rootA, 'api', now);
  impostor = await issue(rootB, 'api', now);
});

/** Starts an mTLS server for `web` that trusts rootA and echoes the client's URI SAN. */
async function startServer(): Promise<{ server: tls.Server; port: number; clientErrors: string[] }> {
  // Node's server verifies the client chain after the handshake and, with
  // rejectUnauthorized, destroys the socket; the reason is on tlsSocket.authorizationError.
  const clientErrors: string[] = [];
  const server = tls.createServer(
    { key: web.key, cert: web.cert, ca: [rootA.certPem], requestCert: true, rejectUnauthorized: true },
    (socket) => {
      const peer = socket.getPeerX509Certificate();
      const ident = peer ? readCertIdentity(peer.raw) : null;
      socket.end(ident?.uris.join(',') ?? 'no identity');
    },
  );
  server.on('tlsClientError', (err, socket) => clientErrors.push(String(socket.authorizationError ?? err.message)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, clientErrors };
}

/** Connects as `leaf`, trusting rootA and checking the server's SPIFFE ID (not its CN). */
async function connect(port: number, leaf: Leaf): Promise<{ data: string; error: Error | null; serverUri: string | null }> {
  let serverUri: string | null = null;
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    key: leaf.key,
    cert: leaf.cert,
    ca: [rootA.certPem],
    checkServerIdentity: (_host, cert) => {
      const ident = readCertIdentity(cert.raw);
      serverUri = ident?.uris[0] ?? null;
      return ident?.uris.length === 1 && ident.uris[0] === web.uri ? undefined : new Error('unexpected server identity');
    },
  });
  let data = '';
  let error: Error | null = null;
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    data += d;
  });
  socket.on('error', (e: Error) => {
    error = e;
  });
  await once(socket, 'close');
  return { data, error, serverUri };
}

test('mTLS: a leaf from our root is accepted and its SPIFFE ID read on both sides', async () => {
  const { server, port, clientErrors } = await startServer();
  try {
    const r = await connect(port, api);
    assert.equal(r.error, null);
    assert.equal(r.serverUri, web.uri);
    assert.equal(r.data, api.uri);
    assert.deepEqual(clientErrors, []);
  } finally {
    server.close();
  }
});

test('mTLS: a leaf from a different root with the same trust domain is rejected', async () => {
  const { server, port, clientErrors } = await startServer();
  try {
    const r = await connect(port, impostor);
    // The server never ran its connection handler, so nothing was echoed.
    assert.equal(r.data, '');
    assert.equal(clientErrors.length, 1);
    // OpenSSL could not chain the impostor's leaf to rootA.
    assert.match(clientErrors[0] as string, /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/);
  } finally {
    server.close();
  }
});
