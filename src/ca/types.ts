// The CA's data types, shared by the control thread, the signing worker and the API.
// Everything here is structured-clone safe (strings, numbers, Dates, arrays): a
// SignLeafRequest crosses to the signing worker as it is.

/** CA key algorithm (§1.3). Leaves are always EC P-256 whatever the CA's type. */
export type CaKeyType = 'ec' | 'rsa';

/** A root CA: the PEMs plus the derived values Consul publishes in `/connect/ca/roots`. */
export type RootMaterial = {
  /** Self-signed root certificate, PEM, newline-terminated (§1.9: RootCert ends in \n). */
  certPem: string;
  /** Root private key, PKCS#8 PEM. Never leaves the CA's process except to its own worker. */
  keyPem: string;
  /** Root `ID`: SHA-1 fingerprint of the cert DER, colon-hex (§1.4). */
  id: string;
  /** `SigningKeyID`: colon-hex of the root's SubjectKeyId (§1.4). */
  signingKeyId: string;
  /** Serial, colon-hex of the big-endian minimal bytes (Consul's EncodeSerialNumber form). */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  /** Lower-case `<cluster-id>.consul`, from the root's URI SAN. */
  trustDomain: string;
  /** `PrivateKeyType` of the Roots[] entry, derived from the key (§1.3). */
  privateKeyType: CaKeyType;
  /** `PrivateKeyBits`: the curve size for EC (256, 384, 521), the modulus size for RSA. */
  privateKeyBits: number;
};

/** Consul's `structs.IssuedCert` JSON (§1.10), as the HTTP API returns it. */
export type IssuedCert = {
  SerialNumber: string;
  /** The leaf PEM, then each of the request's intermediatePems, each newline-terminated. */
  CertPEM: string;
  Service: string;
  ServiceURI: string;
  ValidAfter: string;
  ValidBefore: string;
  Namespace: string;
  Datacenter: string;
};

export type SignLeafRequest = {
  csrPem: string;
  root: RootMaterial;
  /** The cluster's current trust domain (Consul checks against config, not the root). */
  trustDomain: string;
  /** This server's datacenter. */
  datacenter: string;
  now: Date;
  ttlMs?: number;
  /**
   * PEMs appended after the leaf in `CertPEM`, in this order: the active root's
   * `IntermediateCerts`, cross-signed certificates first (§1.7).
   */
  intermediatePems?: string[];
  /**
   * Services the requester may obtain certificates for (Consul's `service:write` check,
   * §1.11 step 3), compared exactly with the CSR's service name. Absent: any service.
   * Checked where the CSR is parsed (the signing worker), so the control thread never
   * parses CSRs.
   */
  allowedServices?: string[];
};

/**
 * `PrivateKeyBits` meshd generates keys with (§1.3). Consul also lists EC 224, which
 * meshd leaves out: P-224 gives 112-bit security where the other curves give 128 and
 * more, and TLS 1.3 defines no signature scheme for it. RSA has no default: the caller
 * must pick.
 */
export const GENERATED_KEY_BITS: { readonly ec: readonly number[]; readonly rsa: readonly number[] } = {
  ec: [256, 384, 521],
  rsa: [2048, 4096],
};

/** `PrivateKeyBits` default for EC (§1.3). */
export const DEFAULT_EC_KEY_BITS = 256;
