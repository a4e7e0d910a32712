//! JWS compact serialization (RFC 7515) with the two algorithms
//! kube-apiserver signs service account tokens with: ES256 (ECDSA P-256,
//! the signature as `r || s`) and RS256 (RSASSA-PKCS1-v1_5, SHA-256), on
//! `ring`. Keys come from PEM files as kube reads them: private keys in
//! PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`); public
//! keys as `PUBLIC KEY` (SubjectPublicKeyInfo), or derived from a private
//! key in the same file.
//!
//! A key's id (`kid`) is kube's: the unpadded base64url of the SHA-256 of
//! its DER SubjectPublicKeyInfo, so a verifier given only the public key
//! names it as the signer does.
//!
//! ```text
//! token = b64url(header) "." b64url(claims) "." b64url(signature over the first two parts)
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The longest token looked at; longer ones are refused unparsed.
pub const MAX_TOKEN_LEN: usize = 64 << 10;

/// The DER SubjectPublicKeyInfo of a P-256 key up to its 65-byte point:
/// `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// `SEQUENCE { rsaEncryption, NULL }`.
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// The PKCS#8 wrapping of a SEC1 P-256 key, up to the key's OCTET STRING:
/// version 0 and `SEQUENCE { id-ecPublicKey, prime256v1 }`.
const P256_PKCS8_ALGORITHM: [u8; 24] = [
    0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
];

/// A JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

/// Why a key or a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("{0}")]
    Key(String),
    /// Not a compact JWS at all (another kind of bearer token).
    #[error("not a JWT")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    /// No key verifies the signature.
    #[error("invalid signature")]
    Signature,
}

/// A key that signs tokens (`--service-account-signing-key-file`).
pub struct SigningKey {
    pair: Pair,
    public: VerifyingKey,
    rng: SystemRandom,
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The first private key in `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, JwtError> {
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) = section.map_err(|e| JwtError::Key(format!("bad PEM: {e}")))?;
            if let Some(key) = SigningKey::from_der(kind, &der)? {
                return Ok(key);
            }
        }
        Err(JwtError::Key("no private key found".into()))
    }

    /// A private key of PEM section `kind`; `None` for other sections.
    fn from_der(kind: SectionKind, der: &[u8]) -> Result<Option<SigningKey>, JwtError> {
        let rejected = |e: ring::error::KeyRejected| JwtError::Key(format!("private key: {e}"));
        let rng = SystemRandom::new();
        let pair = match kind {
            SectionKind::PrivateKey => {
                match EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                ) {
                    Ok(k) => Pair::Ec(k),
                    Err(ec) => match RsaKeyPair::from_pkcs8(der) {
                        Ok(k) => Pair::Rsa(k),
                        Err(_) => {
                            return Err(JwtError::Key(format!(
                                "private key: not an RSA or ECDSA P-256 key ({ec})"
                            )))
                        }
                    },
                }
            }
            SectionKind::EcPrivateKey => {
                let pkcs8 = sec1_to_pkcs8(der);
                Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &pkcs8,
                        &rng,
                    )
                    .map_err(|e| {
                        JwtError::Key(format!("EC private key: only P-256 is supported ({e})"))
                    })?,
                )
            }
            SectionKind::RsaPrivateKey => Pair::Rsa(RsaKeyPair::from_der(der).map_err(rejected)?),
            _ => return Ok(None),
        };
        let spki = match &pair {
            Pair::Ec(k) => [&P256_SPKI_PREFIX[..], k.public_key().as_ref()].concat(),
            Pair::Rsa(k) => rsa_spki(k.public().as_ref()),
        };
        let public = VerifyingKey::from_spki(&spki)?;
        Ok(Some(SigningKey { pair, public, rng }))
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The compact JWS of `claims`, with `alg` and `kid` in its header.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        let header = json!({"alg": self.public.alg.name(), "kid": self.public.kid});
        let mut out = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let failed = |_| JwtError::Key("signing failed".into());
        let sig = match &self.pair {
            Pair::Ec(k) => k
                .sign(&self.rng, out.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    out.as_bytes(),
                    &mut sig,
                )
                .map_err(failed)?;
                sig
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// A public key that verifies tokens (`--service-account-key-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    pub alg: Alg,
    pub kid: String,
    /// What `ring` verifies with: the uncompressed point (ES256) or the
    /// PKCS#1 RSAPublicKey DER (RS256).
    raw: Vec<u8>,
    /// The key as a JWK (`/openid/v1/jwks`).
    jwk: Value,
}

impl VerifyingKey {
    /// Every public key in `pem`: `PUBLIC KEY` sections, and the public
    /// half of private keys.
    pub fn all_from_pem(pem: &[u8]) -> Result<Vec<VerifyingKey>, JwtError> {
        let mut keys = Vec::new();
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) = section.map_err(|e| JwtError::Key(format!("bad PEM: {e}")))?;
            if kind == SectionKind::PublicKey {
                keys.push(VerifyingKey::from_spki(&der)?);
            } else if let Some(k) = SigningKey::from_der(kind, &der)? {
                keys.push(k.public);
            }
        }
        if keys.is_empty() {
            return Err(JwtError::Key("no public or private key found".into()));
        }
        Ok(keys)
    }

    /// A DER SubjectPublicKeyInfo: an RSA key (2048 bits or more) or a
    /// P-256 key.
    pub fn from_spki(der: &[u8]) -> Result<VerifyingKey, JwtError> {
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der));
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            if point.len() != 65 || point[0] != 4 {
                return Err(JwtError::Key("malformed P-256 public key".into()));
            }
            let jwk = json!({
                "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            });
            return Ok(VerifyingKey {
                alg: Alg::Es256,
                kid,
                raw: point.to_vec(),
                jwk,
            });
        }
        let (_, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| JwtError::Key(format!("public key: {e}")))?;
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(JwtError::Key(
                "public key: only RSA and ECDSA P-256 keys are supported".into(),
            ));
        };
        let unsigned = |b: &[u8]| {
            let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
            URL_SAFE_NO_PAD.encode(&b[start..])
        };
        if rsa.key_size() < 2048 {
            return Err(JwtError::Key(format!(
                "RSA public key of {} bits: at least 2048 are needed",
                rsa.key_size()
            )));
        }
        let jwk = json!({
            "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
            "n": unsigned(rsa.modulus), "e": unsigned(rsa.exponent),
        });
        Ok(VerifyingKey {
            alg: Alg::Rs256,
            kid,
            raw: spki.subject_public_key.data.to_vec(),
            jwk,
        })
    }

    /// The key as a JSON Web Key.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.alg {
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        signature::UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, sig)
            .is_ok()
    }
}

/// The claims of a compact JWS, unverified: for routing a token to the
/// authenticator of its issuer before the signature is checked.
pub fn peek_claims(token: &str) -> Result<Value, JwtError> {
    let (_, claims, _) = split(token)?;
    Ok(claims)
}

/// The claims of `token` if one of `keys` (of the header's `alg`) signed it.
pub fn verify(token: &str, keys: &[VerifyingKey]) -> Result<Value, JwtError> {
    let (header, claims, sig) = split(token)?;
    let alg = match header["alg"].as_str() {
        Some("ES256") => Alg::Es256,
        Some("RS256") => Alg::Rs256,
        other => return Err(JwtError::Algorithm(other.unwrap_or_default().to_string())),
    };
    let signed = &token[..token.rfind('.').ok_or(JwtError::Malformed)?];
    keys.iter()
        .filter(|k| k.alg == alg)
        .any(|k| k.verifies(signed.as_bytes(), &sig))
        .then_some(claims)
        .ok_or(JwtError::Signature)
}

/// The decoded header, claims (JSON objects) and signature.
fn split(token: &str) -> Result<(Value, Value, Vec<u8>), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let object = |part: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
        v.is_object().then_some(v).ok_or(JwtError::Malformed)
    };
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    Ok((object(h)?, object(c)?, sig))
}

/// DER length octets.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// A DER element of `tag` around `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    [&[tag][..], &der_len(content.len()), content].concat()
}

/// The SubjectPublicKeyInfo of a PKCS#1 RSAPublicKey.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let bits = der(0x03, &[&[0u8][..], pkcs1].concat());
    der(0x30, &[&RSA_ALGORITHM[..], &bits].concat())
}

/// A SEC1 P-256 private key as PKCS#8 (what `ring` reads).
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    let key = der(0x04, sec1);
    der(0x30, &[&P256_PKCS8_ALGORITHM[..], &key].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 appendix A.3: the ES256 example verifies with the
    /// example's public key, and not once altered.
    #[test]
    fn rfc7515_a3_es256_verifies() {
        let x = URL_SAFE_NO_PAD
            .decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
            .unwrap();
        let spki = [&P256_SPKI_PREFIX[..], &[4], &x, &y].concat();
        let key = VerifyingKey::from_spki(&spki).unwrap();
        assert_eq!(key.alg, Alg::Es256);
        let token = concat!(
            "eyJhbGciOiJFUzI1NiJ9.",
            "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
        );
        let claims = verify(token, std::slice::from_ref(&key)).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["exp"], 1300819380);
        assert_eq!(claims["http://example.com/is_root"], true);
        // One changed signature byte, and it no longer verifies.
        let tampered = token.replacen(".DtEh", ".DtEi", 1);
        assert_eq!(
            verify(&tampered, std::slice::from_ref(&key)),
            Err(JwtError::Signature)
        );
        assert_eq!(
            key.jwk()["x"],
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
        );
    }

    #[test]
    fn es256_keys_sign_and_verify_in_every_pem_form() {
        let generated = rcgen_like_p256();
        let key = SigningKey::from_pem(generated.as_bytes()).unwrap();
        let token = key.sign(&json!({"sub": "me"})).unwrap();
        let public = VerifyingKey::all_from_pem(generated.as_bytes()).unwrap();
        assert_eq!(public[0].kid, key.verifying_key().kid);
        assert_eq!(verify(&token, &public).unwrap()["sub"], "me");
        let header = split(&token).unwrap().0;
        assert_eq!(header, json!({"alg": "ES256", "kid": public[0].kid}));
        // Another key does not verify it; an unsigned token is refused.
        let other = VerifyingKey::all_from_pem(rcgen_like_p256().as_bytes()).unwrap();
        assert_eq!(verify(&token, &other), Err(JwtError::Signature));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"me"}"#)
        );
        assert_eq!(
            verify(&none, &public),
            Err(JwtError::Algorithm("none".into()))
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.bnVsbA.AA"] {
            assert_eq!(verify(junk, &public), Err(JwtError::Malformed), "{junk}");
        }
    }

    /// A fresh P-256 key, PKCS#8 PEM.
    fn rcgen_like_p256() -> String {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        assert!(SigningKey::from_pem(b"").is_err());
        assert!(VerifyingKey::all_from_pem(b"junk").is_err());
        let err =
            SigningKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }
}
