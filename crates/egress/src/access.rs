//! Who may see what: the [`Scope`] of a caller (the operator, or one tenant through the portal),
//! the console's signed session cookies and CSRF tokens, and the portal's signed, short-lived,
//! single-use links.
//!
//! Sessions are stateless: a cookie carries its scope, its expiry and a random nonce, signed
//! with a key derived from `egress.encryption_key`, so every replica reads every session. A
//! form's CSRF token is a MAC of the session's nonce. A portal link carries its tenant, its
//! expiry and a nonce, signed the same way; redeeming it creates the nonce's key in the
//! `egress_portal_links` bucket ([`crate::store::PORTAL_LINKS_BUCKET`]), which fails when it
//! exists, so a link opens one session on whichever replica it reaches first.

use async_nats::jetstream::kv;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookbus_proto::egress::v1::Endpoint;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::engine::unix_now;

/// What a caller may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The bearer token, or an operator's console session: everything.
    Operator,
    /// A portal session: one tenant's endpoints, attempts and messages, nothing else.
    Tenant(String),
}

impl Scope {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Operator => None,
            Scope::Tenant(tenant) => Some(tenant),
        }
    }

    pub fn is_operator(&self) -> bool {
        *self == Scope::Operator
    }

    /// Whether the caller may see something that belongs to `tenant`.
    pub fn sees_tenant(&self, tenant: Option<&str>) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Tenant(own) => tenant == Some(own.as_str()),
        }
    }

    pub fn sees(&self, endpoint: &Endpoint) -> bool {
        self.sees_tenant(endpoint.tenant.as_deref())
    }
}

/// A console session, as its cookie says.
#[derive(Debug, Clone)]
pub struct Session {
    pub scope: Scope,
    /// Unix seconds.
    pub expires_at: i64,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// `o` (operator), `t` (tenant), `l` (portal link).
    k: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<String>,
    e: i64,
    n: String,
}

/// Why a portal link opens nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkRefused {
    #[error("this portal link is not valid")]
    Invalid,
    #[error("this portal link has expired; ask for a new one")]
    Expired,
    #[error("this portal link was already used; ask for a new one")]
    Used,
    #[error("the portal is unavailable; try again")]
    Unavailable,
}

/// The console's signing key.
pub struct Access {
    key: hmac::Key,
    random: SystemRandom,
}

impl Access {
    /// `secret` is the configured encryption key's bytes: the signing key is derived from it,
    /// so it never signs with the key that encrypts.
    pub fn new(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"hookbus console sessions and portal links v1");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            random: SystemRandom::new(),
        }
    }

    fn nonce(&self) -> String {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .expect("the system random generator works");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn mac(&self, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, data))
    }

    fn seal(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mac = self.mac(body.as_bytes());
        format!("{body}.{mac}")
    }

    fn open(&self, token: &str) -> Option<Claims> {
        let (body, mac) = token.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &mac).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// A new session of `scope` for `ttl_seconds`: the cookie's value.
    pub fn start_session(&self, scope: &Scope, ttl_seconds: i64) -> String {
        let (k, t) = match scope {
            Scope::Operator => ("o", None),
            Scope::Tenant(tenant) => ("t", Some(tenant.clone())),
        };
        self.seal(&Claims {
            k: k.into(),
            t,
            e: unix_now() + ttl_seconds,
            n: self.nonce(),
        })
    }

    /// The session a cookie's value carries, if it is one of ours and has not expired.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        self.session_at(cookie, unix_now())
    }

    /// The session a cookie's value carries if it is one of ours, expired or not: what to tell
    /// the one whose session ended.
    pub fn ended_session(&self, cookie: &str) -> Option<Session> {
        self.session_at(cookie, i64::MIN)
    }

    fn session_at(&self, cookie: &str, now: i64) -> Option<Session> {
        let claims = self.open(cookie)?;
        if claims.e <= now {
            return None;
        }
        let scope = match (claims.k.as_str(), claims.t) {
            ("o", None) => Scope::Operator,
            ("t", Some(tenant)) => Scope::Tenant(tenant),
            _ => return None,
        };
        Some(Session {
            scope,
            expires_at: claims.e,
            nonce: claims.n,
        })
    }

    /// The CSRF token of a session's forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.mac(format!("csrf:{}", session.nonce).as_bytes())
    }

    /// A fresh value for the sign-in form's cookie, which its CSRF token is bound to.
    pub fn sign_in_nonce(&self) -> String {
        self.nonce()
    }

    /// The CSRF token of the sign-in form, bound to the nonce in its cookie.
    pub fn sign_in_csrf(&self, nonce: &str) -> String {
        self.mac(format!("sign-in:{nonce}").as_bytes())
    }

    /// Compares a presented CSRF token with the expected one in constant time.
    pub fn csrf_matches(expected: &str, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// A portal link's token for `tenant`, valid for `ttl_seconds`, and when it expires.
    pub fn portal_link(&self, tenant: &str, ttl_seconds: i64) -> (String, i64) {
        let expires_at = unix_now() + ttl_seconds;
        let token = self.seal(&Claims {
            k: "l".into(),
            t: Some(tenant.to_owned()),
            e: expires_at,
            n: self.nonce(),
        });
        (token, expires_at)
    }

    /// Redeems a portal link once, recording its nonce in `links`: the tenant it opens.
    pub async fn redeem(&self, links: &kv::Store, token: &str) -> Result<String, LinkRefused> {
        let claims = self.open(token).ok_or(LinkRefused::Invalid)?;
        let tenant = match (claims.k.as_str(), claims.t) {
            ("l", Some(tenant)) => tenant,
            _ => return Err(LinkRefused::Invalid),
        };
        if claims.e <= unix_now() {
            return Err(LinkRefused::Expired);
        }
        match links.create(&claims.n, "used".into()).await {
            Ok(_) => Ok(tenant),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(LinkRefused::Used),
            Err(e) => {
                tracing::error!(error = %e, "portal link not redeemed");
                Err(LinkRefused::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_expired_or_foreign_token_opens_nothing() {
        let access = Access::new(&[7u8; 32]);
        let cookie = access.start_session(&Scope::Tenant("acme".into()), 60);
        let session = access.session(&cookie).unwrap();
        assert_eq!(session.scope, Scope::Tenant("acme".into()));
        // Another tenant's name in the same body, the MAC kept: refused.
        let (body, mac) = cookie.split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        claims.t = Some("other".into());
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(access.session(&forged).is_none());
        // Signed with another key: refused.
        assert!(Access::new(&[8u8; 32]).session(&cookie).is_none());
        // A portal link is not a session.
        let (link, _) = access.portal_link("acme", 60);
        assert!(access.session(&link).is_none());
        // An expired session is refused, but can be told from a forged one.
        let old = access.start_session(&Scope::Tenant("acme".into()), -1);
        assert!(access.session(&old).is_none());
        assert_eq!(
            access.ended_session(&old).unwrap().scope,
            Scope::Tenant("acme".into())
        );
        assert!(access.ended_session(&forged).is_none());
        // CSRF tokens differ between sessions.
        let other = access
            .session(&access.start_session(&Scope::Tenant("acme".into()), 60))
            .unwrap();
        assert_ne!(access.csrf(&session), access.csrf(&other));
        assert!(Access::csrf_matches(
            &access.csrf(&session),
            &access.csrf(&session)
        ));
        assert!(!Access::csrf_matches(&access.csrf(&session), ""));
    }
}
