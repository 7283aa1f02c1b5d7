//! Signed JWT assertions (RFC 7523) on `jsonwebtoken`: the client
//! assertion of `private_key_jwt` client authentication (§2.2, as OpenID
//! Connect Core §9 profiles it) and the assertion of the JWT bearer grant
//! (§2.1, as Google service accounts use it). Keys are PEM RSA private keys
//! and assertions RS256. No error quotes a key.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nexus_core::SecretString;
use serde::Serialize;

/// Longest lifetime of an assertion (Google refuses more than an hour).
const MAX_LIFETIME_SECS: i64 = 3600;
/// Lifetime of a client assertion: one token request.
const CLIENT_ASSERTION_SECS: i64 = 300;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

fn key(pem: &SecretString) -> Result<EncodingKey, String> {
    EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|_| "is not a PEM RSA private key".to_owned())
}

/// Longest PEM read: a 4096-bit key is about 3.3 KB; larger keys would make
/// every signature slow.
const MAX_PEM_LEN: usize = 8 * 1024;
/// Shortest PEM read: anything shorter holds less than a 2048-bit key.
const MIN_PEM_LEN: usize = 1_500;

fn sign(claims: &Claims<'_>, pem: &SecretString, kid: Option<&str>) -> Result<String, String> {
    if pem.expose().len() > MAX_PEM_LEN {
        return Err("is longer than a 4096-bit key".into());
    }
    // A 2048-bit key's PEM is about 1,700 characters; a 1024-bit one's 900.
    if pem.expose().trim().len() < MIN_PEM_LEN {
        return Err("is smaller than a 2048-bit RSA key".into());
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = key(pem)?;
    // The signer panics on a key too small for an RS256 signature: that is
    // a bad key, not a broken server.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jsonwebtoken::encode(&header, claims, &key)))
        .map_err(|_| "is too small a key for RS256".to_owned())?
        .map_err(|_| "could not sign with this key".to_owned())
}

/// The client assertion of `private_key_jwt`: `iss` and `sub` the client id,
/// `aud` the token endpoint, a fresh `jti`, five minutes to live.
pub fn client_assertion(
    client_id: &str,
    token_url: &str,
    pem: &SecretString,
    kid: Option<&str>,
    now: i64,
) -> Result<String, String> {
    let jti = oauth2::CsrfToken::new_random().secret().clone();
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: token_url,
        iat: now,
        exp: now + CLIENT_ASSERTION_SECS,
        jti: Some(jti),
        scope: None,
    };
    sign(&claims, pem, kid)
}

/// [`client_assertion`] for the client `cfg` describes (its secret is the
/// PEM key), addressed to `audience`, signed now.
pub fn client_assertion_for(cfg: &crate::ClientConfig, audience: &str) -> Result<String, String> {
    client_assertion(&cfg.client_id, audience, &cfg.client_secret, cfg.assertion_kid.as_deref(), now())
}

/// The wall clock in Unix seconds: a provider judges an assertion by its own.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A service-account key as captured for `jwt_bearer` (Google's JSON key
/// file: `client_email`, `private_key`, `token_uri`, and a `subject` to act
/// as a user of the domain).
#[derive(Debug)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: SecretString,
    pub subject: Option<String>,
}

/// The assertion of the JWT bearer grant: `iss` the service account, `sub`
/// the user to act as (or the account itself), `aud` the token endpoint,
/// `scope`, an hour to live.
pub fn bearer_assertion(
    account: &ServiceAccount,
    token_url: &str,
    scopes: &[String],
    now: i64,
) -> Result<String, String> {
    let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
    let claims = Claims {
        iss: &account.client_email,
        sub: account.subject.as_deref().unwrap_or(&account.client_email),
        aud: token_url,
        iat: now,
        exp: now + MAX_LIFETIME_SECS,
        jti: None,
        scope,
    };
    sign(&claims, &account.private_key, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_key_is_refused_not_signed_with() {
        // 512 bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512).
        let pem = SecretString::new(concat!(
            "-----BEGIN PRIVATE KEY-----\n",
            "MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEArtORZhEgNJMsgnPE\n",
            "vbrYPfOTNw4fLs3GXVy6oHwJRtyXcA359JVJRlWxPCExRQ9FXSGb1/i8YAPpL7qC\n",
            "Hn9kRwIDAQABAkAn0mk8Jop/b0akMFqQHQ9EjUbrM3xG3PhiK80W4Sn7ycMB97va\n",
            "A5Zy3Wp7/oHUhjQyLSIZeaF0WxzxFjvWAUgBAiEA2+CE1oPbKa3odKaytPUt/g2P\n",
            "oQur+mbPLwTJY0mZ6AcCIQDLjFVRO4GXqjID5jh4JPA4WbMbVh0aFcz86HyPZLkR\n",
            "wQIgBpX8BJzgdKgj3VKc6bSqUwC++5jo5tArhoIDMjkjJgMCIA7oeFc6xIMXNBKV\n",
            "Cg3CptV5vGSEKh1++0SKwpS+C9ABAiEAr2o/apYhoK2GB/rzMFmVN2sogoiuLZQd\n",
            "mSLXou7a1tM=\n",
            "-----END PRIVATE KEY-----\n"
        ));
        let err = client_assertion("c", "https://idp.example/token", &pem, None, 0).unwrap_err();
        assert!(err.contains("2048"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_one_is_an_error_that_does_not_quote_it() {
        let pem = SecretString::new("-----BEGIN PRIVATE KEY-----\nnot-a-key-material-123\n-----END PRIVATE KEY-----");
        let err = client_assertion("c", "https://idp.example/token", &pem, None, 0).unwrap_err();
        assert!(!err.contains("not-a-key-material"), "{err}");
    }
}
