"""Pairing material for the emulated iPhone, minted with `cryptography`: the device's own RSA identity (its
DevicePublicKey), and a host pair record (root CA, host and device certificates) as a Mac or `pymobiledevice3
lockdown pair` would have left it. The record's keys are the ones pymobiledevice3 reads from a pair record."""

from __future__ import annotations

import datetime
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=3650)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn: str, public_key: rsa.RSAPublicKey, issuer_cn: str, signer: rsa.RSAPrivateKey,
          ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # a minute of slack: the client may check validity against a clock read a moment earlier
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class DeviceIdentity:
    """The phone's key pair: lockdownd hands out the public half as DevicePublicKey (PKCS#1 PEM, as iOS does) and
    signs its side of every TLS handshake with the private half."""

    key_pem: bytes
    public_key_pem: bytes

    @classmethod
    def mint(cls) -> DeviceIdentity:
        key = _new_key()
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        return cls(_key_pem(key), public)


def mint_pair_record(device: DeviceIdentity, system_buid: str, wifi_mac: str) -> dict[str, Any]:
    """A complete host-side pair record: the host holds the root and host keys; the device certificate binds the
    phone's own public key to that root, so the phone can present it in TLS."""
    root_key = _new_key()
    root = _cert("devicelab emulated pairing root", root_key.public_key(), "devicelab emulated pairing root",
                 root_key, ca=True)
    host_key = _new_key()
    host = _cert("devicelab emulated host", host_key.public_key(), "devicelab emulated pairing root", root_key,
                 ca=False)
    device_public = serialization.load_pem_public_key(device.public_key_pem)
    assert isinstance(device_public, rsa.RSAPublicKey)
    device_cert = _cert("devicelab emulated device", device_public, "devicelab emulated pairing root", root_key,
                        ca=False)
    pem = serialization.Encoding.PEM
    return {
        "DeviceCertificate": device_cert.public_bytes(pem),
        "HostCertificate": host.public_bytes(pem),
        "HostPrivateKey": _key_pem(host_key),
        "RootCertificate": root.public_bytes(pem),
        "RootPrivateKey": _key_pem(root_key),
        "HostID": str(uuid.uuid4()).upper(),
        "SystemBUID": system_buid,
        "WiFiMACAddress": wifi_mac,
        "EscrowBag": uuid.uuid4().bytes * 2,
    }


@dataclass(frozen=True)
class HostPairing:
    """What the phone remembers of one paired host: the certificates exchanged in Pair."""

    host_id: str
    host_certificate: bytes
    root_certificate: bytes
    device_certificate: bytes
    escrow_bag: bytes


def server_context(pairing: HostPairing, device: DeviceIdentity, folder: Path) -> ssl.SSLContext:
    """The device side of lockdown TLS for one host: present the device certificate the host's root signed, and
    require exactly the host certificate exchanged in Pair (an unpaired host cannot finish the handshake)."""
    folder.mkdir(parents=True, exist_ok=True)
    chain = folder / f"{pairing.host_id}.pem"
    chain.write_bytes(pairing.device_certificate.rstrip(b"\n") + b"\n" + device.key_pem)
    chain.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # pymobiledevice3 offers TLS 1.2-1.3 with SECLEVEL=0 ciphers; iOS accepts both versions
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(chain))
    context.verify_mode = ssl.CERT_REQUIRED
    # Pinned rather than chained to the root: pairing certificates (pymobiledevice3's, like libimobiledevice's)
    # have empty subject and issuer names, which OpenSSL cannot build a chain through; trusting the one host
    # certificate as a partial chain checks the same thing the phone does, that this is the paired host's key
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=pairing.host_certificate.decode())
    return context
