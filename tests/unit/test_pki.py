"""The local control plane's certificates: a CA as a kubeadm cluster's."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devcluster import pki


def test_the_ca_signs_with_rsa_and_the_certificates_it_issues_have_ec_keys(tmp_path):
    """The API server checks the CA's signature on a client certificate at every request: an RSA one (as
    kubeadm's CA makes) in half the time of an ECDSA one. The certificates' own keys stay EC, quick to
    make."""
    authority = pki.Authority(tmp_path)
    admin = authority.issue("admin", "admin", organization="system:masters")
    ca = x509.load_pem_x509_certificate(authority.cert_path.read_bytes())
    cert = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    assert isinstance(ca.public_key(), rsa.RSAPublicKey)
    assert ca.public_key().key_size == 2048
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)
