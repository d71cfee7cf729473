#!/usr/bin/python3
"""Writes the throwaway certificates of the interop tests into OUTDIR.

    mkcerts.py OUTDIR

All keys are EC P-256.  Files:
  ca.pem/ca.key              the test CA
  server.pem/server.key      CA-signed, CN localhost, SAN DNS localhost,
                             IP 127.0.0.1, IP ::1
  selfsigned.pem/.key        self-signed, SAN DNS localhost, IP 127.0.0.1
  otherca.pem/.key           an unrelated CA
  wrongname.pem/.key         CA-signed, SAN DNS other.example only
  expired.pem/.key           CA-signed, valid 2020-01-01..2021-01-01, SAN as server
  sanip_badcn.pem/.key       CA-signed, CN wrong.example, SAN IP 127.0.0.1 only
  cnonly.pem/.key            CA-signed, CN localhost, no SAN extension

The files are written to a temporary directory next to OUTDIR's files and
moved into place one by one, so a concurrent reader never sees half a file.
"""
import datetime
import ipaddress
import os
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
LONG_AGO = NOW - datetime.timedelta(days=1)
LATER = NOW + datetime.timedelta(days=3650)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ncgrpc tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def san(dns=(), ips=()):
    entries = [x509.DNSName(d) for d in dns]
    entries += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return x509.SubjectAlternativeName(entries)


def make_ca(cn):
    key = new_key()
    subject = name(cn)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(LONG_AGO).not_valid_after(LATER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(cn, issuer_cert, issuer_key, *, alt=None, not_before=LONG_AGO,
              not_after=LATER, self_signed=False):
    """A TLS server certificate.  alt is a SubjectAlternativeName or None."""
    key = new_key()
    if self_signed:
        issuer_cert, issuer_key = None, key
    subject = name(cn)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(subject if self_signed else issuer_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                              critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if not self_signed:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if alt is not None:
        builder = builder.add_extension(alt, critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.stderr.write("usage: mkcerts.py OUTDIR\n")
        return 64
    out = argv[1]
    os.makedirs(out, exist_ok=True)

    files = {}
    ca, ca_key = make_ca("ncgrpc test CA")
    files["ca.pem"], files["ca.key"] = pem_cert(ca), pem_key(ca_key)

    other, other_key = make_ca("unrelated test CA")
    files["otherca.pem"], files["otherca.key"] = pem_cert(other), pem_key(other_key)

    server_san = san(dns=["localhost"], ips=["127.0.0.1", "::1"])
    leaves = {
        "server": make_leaf("localhost", ca, ca_key, alt=server_san),
        "selfsigned": make_leaf("localhost", None, None, self_signed=True,
                                alt=san(dns=["localhost"], ips=["127.0.0.1"])),
        "wrongname": make_leaf("other.example", ca, ca_key, alt=san(dns=["other.example"])),
        "expired": make_leaf(
            "localhost", ca, ca_key, alt=server_san,
            not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)),
        "sanip_badcn": make_leaf("wrong.example", ca, ca_key, alt=san(ips=["127.0.0.1"])),
        "cnonly": make_leaf("localhost", ca, ca_key, alt=None),
    }
    for base, (cert, key) in leaves.items():
        files[base + ".pem"], files[base + ".key"] = pem_cert(cert), pem_key(key)

    for fname, data in files.items():
        fd, tmp = tempfile.mkstemp(prefix="." + fname + ".", dir=out)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600 if fname.endswith(".key") else 0o644)
        os.replace(tmp, os.path.join(out, fname))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
