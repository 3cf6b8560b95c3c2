// The certificate an ingress gateway's TLS listeners present: the operator's own (a public
// CA's, or any the clients trust), read from -tls-cert-file and -tls-key-file, not a mesh
// leaf. Read at start (a bad file stops the gateway there) and again on SIGHUP (a bad file
// then keeps the certificate in use). The key is a secret: no message here quotes a file's
// content, only its name and what is wrong with it.
// Runs on: the gateway's control thread; the PEM text travels to the workers in messages.

import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import type { IngressCertificate } from '../workers/messages.ts';

export interface IngressCertificateFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A loaded certificate, with what may be logged about it (never the key). */
export interface LoadedIngressCertificate {
  readonly material: IngressCertificate;
  readonly subject: string;
  /** SHA-256 of the leaf's DER, colon-separated hex (as openssl and Node print it). */
  readonly fingerprint256: string;
  readonly validTo: Date;
  /** Certificates in -tls-cert-file (the leaf and its chain). */
  readonly chainLength: number;
}

/** A file that cannot serve: the message names the flag and the file. */
export class IngressCertificateError extends Error {
  override readonly name = 'IngressCertificateError';
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const KEY_BLOCK = /-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----/;

function read(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new IngressCertificateError(`-${flag} ${file}: cannot read it: ${(e as Error).message}`);
  }
}

/**
 * Reads and checks both files: the certificate file holds PEM certificates (the leaf first,
 * then any intermediates), the key file one PEM private key (unencrypted) that is the leaf's.
 */
export function loadIngressCertificate(files: IngressCertificateFiles): LoadedIngressCertificate {
  const certPem = read('tls-cert-file', files.certFile);
  const keyPem = read('tls-key-file', files.keyFile);
  const blocks = certPem.match(CERT_BLOCK) ?? [];
  const first = blocks[0];
  if (first === undefined) throw new IngressCertificateError(`-tls-cert-file ${files.certFile}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(first);
    for (const b of blocks.slice(1)) new X509Certificate(b);
  } catch (e) {
    throw new IngressCertificateError(`-tls-cert-file ${files.certFile}: not a valid PEM certificate: ${(e as Error).message}`);
  }
  const kind = KEY_BLOCK.exec(keyPem)?.[1];
  if (kind === undefined) throw new IngressCertificateError(`-tls-key-file ${files.keyFile}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)`);
  if (kind === 'ENCRYPTED PRIVATE KEY') throw new IngressCertificateError(`-tls-key-file ${files.keyFile}: the key is encrypted; give it unencrypted (meshd takes no passphrase)`);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new IngressCertificateError(`-tls-key-file ${files.keyFile}: not a valid PEM private key: ${(e as Error).message}`);
  }
  if (!leaf.checkPrivateKey(key)) throw new IngressCertificateError(`-tls-key-file ${files.keyFile}: the key does not match the first certificate of -tls-cert-file ${files.certFile}`);
  const material: IngressCertificate = { certPem, keyPem };
  // What the workers will do with it, done once here so that they cannot fail on it.
  try {
    tls.createSecureContext({ cert: certPem, key: keyPem });
  } catch (e) {
    throw new IngressCertificateError(`-tls-cert-file ${files.certFile} / -tls-key-file ${files.keyFile}: not usable for TLS: ${(e as Error).message}`);
  }
  return { material, subject: leaf.subject.replace(/\n/g, ', '), fingerprint256: leaf.fingerprint256, validTo: new Date(leaf.validTo), chainLength: blocks.length };
}

/** A log line's description: subject, fingerprint, expiry (public facts only). */
export function describeIngressCertificate(c: LoadedIngressCertificate): string {
  return `subject ${JSON.stringify(c.subject)}, sha256 ${c.fingerprint256}, not after ${c.validTo.toISOString()}${c.chainLength > 1 ? `, ${c.chainLength - 1} chain certificate(s)` : ''}`;
}
