//! Member authentication: HS256 JWTs with `sub` (the user id) and `exp`.
//! The algorithm is pinned, so `alg: none` or an RSA/ECDSA header is refused.

use std::future::{Ready, ready};
use std::time::{Duration, SystemTime};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use aurum_schema::ids::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Written when issuing; checked by jsonwebtoken's validation, which
    /// reads them itself (an `aud` may be a string or an array).
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub aud: Option<String>,
}

/// Signs and verifies member tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // jsonwebtoken checks `aud` whenever a token has one, and refuses
        // it unless an audience is expected: without JWT_AUDIENCE, `aud`
        // is not ours to judge.
        validation.validate_aud = false;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: None,
            audience: None,
        }
    }

    /// Requires `iss` to be `issuer` and `aud` to name `audience`, each only
    /// when given (JWT_ISSUER, JWT_AUDIENCE): tokens of another issuer or
    /// meant for another service sharing the key are refused. Tokens this
    /// node issues carry both, so `aurum token` stays usable.
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            self.validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            self.validation.required_spec_claims.insert("aud".to_owned());
        }
        self.issuer = issuer.map(str::to_owned);
        self.audience = audience.map(str::to_owned);
        self
    }

    /// Issues a token for `user`, valid for `ttl_secs`.
    pub fn issue(
        &self,
        user: UserId,
        admin: bool,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp().max(0).unsigned_abs();
        let claims = Claims {
            sub: user.to_string(),
            exp: now.saturating_add(ttl_secs),
            role: admin.then(|| "admin".to_owned()),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("token expired"),
                ErrorKind::InvalidIssuer => ApiError::unauthorized("token issuer not accepted"),
                ErrorKind::InvalidAudience => ApiError::unauthorized("token audience not accepted"),
                ErrorKind::MissingRequiredClaim(claim) => {
                    ApiError::unauthorized(format!("token lacks the `{claim}` claim"))
                }
                _ => ApiError::unauthorized("invalid token"),
            }
        })?;
        let id = UserId::parse(&data.claims.sub)
            .ok_or_else(|| ApiError::unauthorized("token subject is not a user id"))?;
        // An `exp` past what the clock can hold is no expiry we can honour.
        let expires_at = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(data.claims.exp))
            .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        Ok(AuthUser {
            id,
            admin: data.claims.role.as_deref() == Some("admin"),
            expires_at,
        })
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys { <redacted> }")
    }
}

/// The member a request speaks for, from `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: UserId,
    pub admin: bool,
    /// The token's `exp`: a socket authenticated by it is closed then.
    pub expires_at: SystemTime,
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <token>`"))?;
    state.jwt.verify(token)
}

/// An authenticated member with the admin role.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|user| {
            if user.admin {
                Ok(Self(user))
            } else {
                Err(ApiError::forbidden("admin role required"))
            }
        }))
    }
}
